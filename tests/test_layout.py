"""The package's shape, checked: surfaces stay in their folders and the job machinery never
names one (layers are checked by import-linter in CI; this covers what imports cannot show)."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "batchvision"
SURFACES = ("moondream", "animaldetect", "yandex", "raku", "bitmind")
# Settings keep their documented BATCHVISION_* names (one Settings class for the whole server).
ALLOWED = {"core/settings.py"}
# The backend protocol of Moondream's model servers (Station, Photon, Cloud) is a model kind, not
# the surface: its client, its kind, and the grounding / protocol value naming it (DESIGN.md,
# models). Allowed for that one word and these files only.
BACKEND_ALLOWED = {
    "moondream": {
        "models/vlm/moondream_rest.py",
        "models/vlm/kinds.py",
        "models/vlm/config.py",
        "models/vlm/grounding.py",
    }
}


def _sources() -> list[tuple[str, str]]:
    return [
        (path.relative_to(PACKAGE).as_posix(), path.read_text(encoding="utf-8"))
        for path in sorted(PACKAGE.rglob("*.py"))
    ]


def test_surface_names_appear_only_in_their_folder_and_the_app() -> None:
    strays = []
    for name, text in _sources():
        for surface in SURFACES:
            own_folder = name.startswith(f"api/compat/{surface}/")
            backend = name in BACKEND_ALLOWED.get(surface, set())
            if own_folder or backend or name in ALLOWED or name == "api/app.py":
                continue
            if re.search(surface, text, re.IGNORECASE):
                strays.append(f"{name}: {surface}")
    assert strays == []


def test_the_app_names_each_surface_only_to_register_it() -> None:
    text = (PACKAGE / "api" / "app.py").read_text(encoding="utf-8")
    for surface in SURFACES:
        lines = [line for line in text.splitlines() if surface in line.lower()]
        assert len(lines) == 2, lines  # its import and its entry in SURFACES


def test_no_surface_branches_outside_the_api() -> None:
    branches = [
        f"{name}: {match.group(0)}"
        for name, text in _sources()
        if not name.startswith("api/")
        for match in re.finditer(r"surface\s*[!=]=\s*['\"]\w+['\"]", text)
    ]
    assert branches == []
