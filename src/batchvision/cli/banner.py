"""What `batchvision serve` says as it starts: where it listens and keeps its data, which models
it can run, its vision-language backend, and whether anyone can call it yet.

The facts come from the same places the server reads (settings, the model registry, the key
store), gathered once before the server starts; nothing here is needed to serve. With
`first_key`, an auth-required server with no active key creates one admin key and shows its
secret in the banner, once: the only way a fresh `make serve` can hand out a working key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
from sqlalchemy.engine import make_url

from batchvision import __version__
from batchvision.core.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

FIRST_KEY_NAME = "admin"
VLM_PROBE_TIMEOUT_S = 2.0


@dataclass
class StartFacts:
    settings: Settings
    installed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    active_keys: int = 0
    first_secret: str | None = None  # a key created just now (shown once)
    vlm_state: str = ""


def gather(settings: Settings, database: Engine, *, first_key: bool) -> StartFacts:
    from batchvision.accounts.keys import KeyStore
    from batchvision.models.registry import ModelRegistry

    facts = StartFacts(settings)
    for status in ModelRegistry(settings).statuses():
        if status.card.task == "vlm" and not settings.vlm_url and status.card.name == "vlm":
            continue  # the default backend card, unset: reported on the VLM line instead
        target = facts.installed if status.state == "installed" else facts.missing
        target.append(status.card.name)
    keys = KeyStore(database)
    facts.active_keys = sum(1 for key in keys.all_keys() if key.active)
    if first_key and settings.auth == "required" and facts.active_keys == 0:
        facts.first_secret = keys.create(FIRST_KEY_NAME, is_admin=True).secret
        facts.active_keys = 1
    facts.vlm_state = vlm_state(settings)
    return facts


def vlm_state(settings: Settings) -> str:
    """The default backend and whether it answers (any HTTP answer counts: it is up)."""
    if not settings.vlm_url:
        return "none (caption, query, point need one: set BATCHVISION_VLM_URL)"
    try:
        httpx.get(settings.vlm_url, timeout=VLM_PROBE_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return f"{settings.vlm_url} ({settings.vlm_protocol}) — unreachable: {type(exc).__name__}"
    return f"{settings.vlm_url} ({settings.vlm_protocol}) — reachable"


def banner(facts: StartFacts) -> list[str]:
    settings = facts.settings
    base = f"http://{settings.host}:{settings.port}"
    database = make_url(settings.resolved_database_url()).render_as_string(hide_password=True)
    lines = [
        f"batchvision {__version__}",
        f"  listening   {base}  (playground {base}/, API docs {base}/docs)",
        f"  data dir    {settings.data_dir.resolve()}",
        f"  database    {database}",
        f"  model dirs  {', '.join(str(d) for d in settings.model_dirs) or '(none)'}",
        f"  models      {', '.join(facts.installed) or '(none installed)'}",
    ]
    if facts.missing:
        hint = "(batchvision models list says how to get them)"
        lines.append(f"  missing     {', '.join(facts.missing)}  {hint}")
    lines.append(f"  VLM backend {facts.vlm_state}")
    lines += _auth_lines(facts)
    return lines


def _auth_lines(facts: StartFacts) -> list[str]:
    settings = facts.settings
    if settings.auth == "disabled":
        return ["  auth        disabled: anyone who can reach this address may call it"]
    lines = [f"  auth        required; {facts.active_keys} active key(s)"]
    secret = facts.first_secret
    if secret is not None:
        lines += [
            f"  first key   '{FIRST_KEY_NAME}' (admin), shown once — store it now:",
            f"              {secret}",
            f'  try it      curl -H "Authorization: Bearer {secret}" {_usage_url(settings)}',
        ]
    elif facts.active_keys == 0:
        command = f"batchvision keys create --name admin --admin --data-dir {settings.data_dir}"
        lines.append(f"  no keys yet: every /v1 call gets 401. Create one: {command}")
    return lines


def _usage_url(settings: Settings) -> str:
    return f"http://{settings.host}:{settings.port}/v1/usage"
