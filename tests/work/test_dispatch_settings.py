"""The Celery runner's start-up checks: it needs a broker URL and Celery itself, and says so
before any request arrives."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from batchvision.core.settings import Settings
from batchvision.work.broker import celery_app


def test_the_celery_runner_needs_a_broker_url(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="job_runner=celery needs broker_url"):
        Settings(data_dir=tmp_path, job_runner="celery")


def test_without_the_extra_the_runner_names_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path, job_runner="celery", broker_url="redis://127.0.0.1:1/0")
    monkeypatch.setitem(sys.modules, "celery", None)  # as if batchvision[celery] were missing
    with pytest.raises(RuntimeError, match=r"pip install 'batchvision\[celery\]'"):
        celery_app(settings)


def test_a_celery_app_is_set_for_model_work(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, job_runner="celery", broker_url="redis://127.0.0.1:1/0")
    conf = celery_app(settings).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] == settings.job_visibility_timeout_s
    assert conf.broker_url == "redis://127.0.0.1:1/0"
