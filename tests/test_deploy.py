"""deploy/ names only what the project has: every `batchvision` command line in the Dockerfile,
the compose file and deploy/README.md parses with the real CLI, every BATCHVISION_* variable is a
setting and the whole environment validates, the pip extras and Debian packages are the
project's own. No container engine runs here, so the files' text is checked against the code."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from typing import Any

import pytest
import typer
import yaml
from typer.main import get_command

from batchvision.cli.main import app
from batchvision.core.settings import Settings
from batchvision.models.cards import load_cards
from conftest import REPO

DEPLOY = REPO / "deploy"
COMPOSE: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
SETTING_VARS = {f"BATCHVISION_{name.upper()}" for name in Settings.model_fields}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comment lines dropped and continuation lines joined."""
    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    joined = re.sub(r"\\\n", " ", text)
    pairs = (line.strip().split(None, 1) for line in joined.splitlines() if line.strip())
    return [(pair[0].upper(), pair[1] if len(pair) > 1 else "") for pair in pairs]


DOCKERFILE = dockerfile_instructions()


def runs(instruction: str) -> list[str]:
    return [args for name, args in DOCKERFILE if name == instruction]


def command_words(command: str | list[str] | None) -> list[str]:
    # Compose splits a string command the way a shell does; a list is taken as is.
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(word) for word in command]


def interpolate(value: object) -> str:
    """Compose's `${NAME:-default}` with NAME unset, as on a first `docker compose up`."""
    text = re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", str(value))
    return text.replace("$$", "$")


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the `- NAME=value` form
        env = dict(item.split("=", 1) for item in env)
    return {name: interpolate(value) for name, value in env.items()}


def batchvision_services() -> dict[str, list[str]]:
    """Service name -> the `batchvision` arguments its command runs."""
    found = {}
    for name, service in SERVICES.items():
        words = command_words(service.get("command"))
        if words[:1] == ["batchvision"]:
            found[name] = words[1:]
    return found


def invocations() -> dict[str, list[str]]:
    """Every `batchvision …` command line deploy/ runs or tells the user to run, by where."""
    found = {f"compose {name}": args for name, args in batchvision_services().items()}
    (cmd,) = runs("CMD")
    found["Dockerfile CMD"] = json.loads(cmd)[1:]
    for run in runs("RUN"):
        for step in run.split("&&"):
            words = shlex.split(step)
            if words[:1] == ["batchvision"]:
                found[f"Dockerfile RUN {' '.join(words[1:4])}"] = words[1:]
    readme = (DEPLOY / "README.md").read_text()
    # Command lines of its code blocks, run on the host or in a service.
    for service, line in re.findall(
        r"^(?:docker compose exec (\S+) )?batchvision (.+)$", readme, re.M
    ):
        assert service in {"", *SERVICES}, f"deploy/README.md execs in unknown service {service}"
        found[f"README {line.strip()}"] = shlex.split(line)
    return found


def parse_cli(args: list[str]) -> None:
    """Walk the real CLI to the sub-command and let it parse the options, as a run would (typer
    vendors click: its parse errors are `typer.TyperException`s, its groups have `commands`)."""
    command: Any = get_command(app)
    path, rest = ["batchvision"], list(args)
    while (children := getattr(command, "commands", None)) is not None:
        if not rest or rest[0] not in children:
            word = rest[0] if rest else "(nothing)"
            pytest.fail(
                f"`batchvision {' '.join(args)}`: no such command {word!r} under "
                f"`{' '.join(path)}` (it has: {', '.join(children)})"
            )
        path.append(rest.pop(0))
        command = children[path[-1]]
    try:
        command.make_context(" ".join(path), rest, resilient_parsing=False)
    except typer.TyperException as exc:
        pytest.fail(f"`batchvision {' '.join(args)}`: {exc.format_message()}")


def test_compose_has_the_scale_out_services() -> None:
    wanted = {"api1", "api2", "worker1", "worker2", "redis", "postgres", "minio"}
    assert wanted <= set(SERVICES), f"missing: {sorted(wanted - set(SERVICES))}"
    commands = {name: args[0] for name, args in batchvision_services().items()}
    assert commands == {"api1": "serve", "api2": "serve", "worker1": "worker", "worker2": "worker"}


@pytest.mark.parametrize(
    "args", [pytest.param(args, id=where) for where, args in sorted(invocations().items())]
)
def test_every_batchvision_command_line_parses_with_the_real_cli(args: list[str]) -> None:
    # Until `batchvision worker` exists the worker services fail here, naming the missing command.
    parse_cli(args)


def test_the_image_pulls_only_shipped_cards_that_download_and_are_not_agpl() -> None:
    cards = load_cards(Settings())
    pulled = [
        args[2]
        for where, args in invocations().items()
        if where.startswith("Dockerfile RUN") and args[:2] == ["models", "pull"]
    ]
    assert "yolox-nano" in pulled, "the default detect model must be in the image"
    for name in pulled:
        assert name in cards, f"the Dockerfile pulls {name}, which has no model card"
        card = cards[name]
        assert card.url or card.wheel, f"{name} has neither a url nor a wheel to pull from"
        assert "AGPL" not in card.license, f"{name} is {card.license}: opt-in, never baked in"


def all_env_vars() -> list[str]:
    names = {name for service in SERVICES.values() for name in environment(service)}
    return sorted(name for name in names if name.startswith("BATCHVISION_"))


@pytest.mark.parametrize("var", all_env_vars())
def test_every_batchvision_variable_in_compose_is_a_setting(var: str) -> None:
    if var not in SETTING_VARS:
        pytest.fail(
            f"docker-compose.yml sets {var}, but Settings (core/settings.py) has no field "
            f"{var.removeprefix('BATCHVISION_').lower()!r}: the server would ignore it"
        )


@pytest.mark.parametrize("name", sorted(batchvision_services()))
def test_each_batchvision_service_environment_is_valid_settings(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var, value in environment(SERVICES[name]).items():
        monkeypatch.setenv(var, value)
    settings = Settings()  # raises on a value or a combination the server would refuse
    assert settings.auth == "required", "a published server keeps auth on"
    assert settings.database_url and settings.database_url.startswith("postgresql+psycopg://")
    assert settings.blob_store == "s3"
    assert settings.rate_limit_store == "redis"
    assert settings.credit_reservation_grace_s > 0, "replicas share a database (see README)"


def pip_extras() -> set[str]:
    (extras,) = re.findall(r"pip install \"\.\[([^\]]*)\]\"", " ".join(runs("RUN")))
    return {extra.strip() for extra in extras.split(",")}


def test_the_image_installs_existing_extras_for_every_backend_compose_selects() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    declared = set(pyproject["project"]["optional-dependencies"])
    assert pip_extras() <= declared, f"unknown extras: {sorted(pip_extras() - declared)}"
    env = environment(SERVICES["api1"])
    needed = {
        "celery": env.get("BATCHVISION_JOB_RUNNER") == "celery",
        "s3": env.get("BATCHVISION_BLOB_STORE") == "s3",
        "redis": env.get("BATCHVISION_RATE_LIMIT_STORE") == "redis",
        "postgres": env.get("BATCHVISION_DATABASE_URL", "").startswith("postgresql+psycopg"),
    }
    missing = {extra for extra, wanted in needed.items() if wanted} - pip_extras()
    assert not missing, f"compose selects backends whose extras the image lacks: {missing}"


def test_the_image_installs_debian_packages_with_the_project_script_only() -> None:
    # One list (scripts/system-packages RUNTIME), never a copy in the Dockerfile that drifts.
    script = "scripts/system-packages"
    assert any(args.startswith(script) for args in runs("COPY")), f"COPY {script} missing"
    assert any(re.search(r"system-packages runtime\b", args) for args in runs("RUN"))
    assert not [args for args in runs("RUN") if "apt-get install" in args]
    assert (REPO / script).exists()


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> volume name or host path."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        found[target] = source
    return found


def test_every_replica_and_worker_shares_one_data_volume() -> None:
    # The URL-signing and access-token keys live in data_dir: a link api1 signs must verify on
    # api2, and workers sign the links in job callbacks.
    sources = set()
    for name in batchvision_services():
        data_dir = environment(SERVICES[name]).get("BATCHVISION_DATA_DIR", "/data")
        assert data_dir in mounts(SERVICES[name]), f"{name}: nothing mounted at {data_dir}"
        sources.add(mounts(SERVICES[name])[data_dir])
    assert len(sources) == 1, f"data_dir comes from different volumes: {sorted(sources)}"
    assert sources <= set(COMPOSE["volumes"]), "the data volume is a declared named volume"


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_api_replicas_publish_the_port_they_serve_on_each_on_its_own_host_port() -> None:
    (cmd,) = runs("CMD")
    assert runs("EXPOSE") == [option(json.loads(cmd), "--port")]
    host_ports = []
    for name, args in batchvision_services().items():
        if args[0] != "serve":
            assert "ports" not in SERVICES[name], f"{name} has no HTTP server to publish"
            continue
        for mapping in SERVICES[name]["ports"]:
            host, container = str(mapping).rsplit(":", 1)
            assert container == option(args, "--port"), f"{name} publishes {mapping}"
            host_ports.append(host)
    assert sorted(host_ports) == ["8081", "8082"]


def test_dependencies_and_volumes_name_what_the_file_declares() -> None:
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
        for source in mounts(service).values():
            if not source.startswith((".", "/")):
                assert source in COMPOSE["volumes"], f"{name} mounts undeclared volume {source}"
