"""The README tells the truth about what a user can configure and run: every setting is in its
configuration table under its environment variable, every file its examples read exists, and
every `batchvision` command it shows is one the CLI has."""

from __future__ import annotations

import re

from typer.main import get_command

from batchvision.cli.main import app
from batchvision.core.settings import Settings
from conftest import REPO, SHARED

README = (REPO / "README.md").read_text()


def configuration_section() -> str:
    start = README.index("\n## Configuration")
    return README[start : README.index("\n## ", start + 5)]


def test_every_setting_has_a_row_with_its_environment_variable() -> None:
    table = configuration_section()
    for name in Settings.model_fields:
        row = next((line for line in table.splitlines() if line.startswith(f"| {name} |")), None)
        assert row is not None, f"setting {name} is missing from the README's configuration table"
        assert f"`BATCHVISION_{name.upper()}`" in row, row


def test_every_shared_file_the_examples_read_exists() -> None:
    paths = set(re.findall(r"\.\./shared/[\w./-]+\.\w+", README))
    assert paths, "the examples use files from ../shared"
    for path in sorted(paths):
        assert (REPO / path).exists() or (SHARED.parent / path.removeprefix("../")).exists(), path


def test_every_cli_command_shown_exists() -> None:
    root = get_command(app)
    # In code: `batchvision keys create …` or .venv/bin/batchvision run …
    shown = set(re.findall(r"(?:\.venv/bin/|`)batchvision ((?:[a-z][a-z-]+ ?){1,2})", README))
    assert shown
    for words in sorted(shown):
        command = root
        for word in words.split():
            children = getattr(command, "commands", None)
            if children is None:
                break  # a leaf command: what follows is its arguments
            assert word in children, f"README shows 'batchvision {words.strip()}'"
            command = children[word]
