"""The playground's files over real HTTP, without a browser: `/` and every asset it loads come
with the right content types and a same-origin-only policy, with no API key; nothing in them
names another origin; the package ships them."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from batchvision.api.playground.router import CONTENT_TYPES, STATIC
from conftest import REPO, LiveServer, make_settings, start_server

# Module imports ("./x.js") and the page's own src/href references.
_IMPORT = re.compile(r"""^\s*import\s[^;]*?from\s+["']([^"']+)["']""", re.MULTILINE)
_REFERENCE = re.compile(r"""(?:src|href)=["']([^"']+)["']""")
_URL = re.compile(r"""https?://|(?<![:\w])//[\w-]+\.\w""")  # absolute or protocol-relative


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(make_settings(tmp_path_factory.mktemp("assets"), auth="required"))
    yield live
    live.stop()


def _static_files() -> list[Path]:
    return sorted(path for path in STATIC.iterdir() if path.is_file())


def _loaded_by_the_page(client: httpx.Client) -> set[str]:
    """Every same-origin path the page loads: its references, then module imports, followed."""
    page = client.get("/").text
    # Relative to the page, so a proxy's path prefix carries over; from "/" they are these.
    wanted = {f"/{ref}" for ref in _REFERENCE.findall(page) if ref.startswith("playground/")}
    seen: set[str] = set()
    while wanted:
        path = wanted.pop()
        seen.add(path)
        if path.endswith(".js"):
            base = path.rsplit("/", 1)[0]
            for module in _IMPORT.findall(client.get(path).text):
                assert module.startswith("./"), f"{path} imports {module}: not a relative module"
                found = f"{base}/{module[2:]}"
                if found not in seen:
                    wanted.add(found)
    return seen


def test_the_page_and_its_assets_are_served_with_their_types_and_without_a_key(
    server: LiveServer,
) -> None:
    with server.client() as client:
        assert client.get("/v1/skills").status_code == 401  # the API wants a key ...
        page = client.get("/")  # ... the page does not
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert '<script type="module" src="playground/app.js">' in page.text
        loaded = _loaded_by_the_page(client)
        assert {"/playground/app.js", "/playground/style.css", "/playground/draw.js"} <= loaded
        for path in sorted(loaded):
            response = client.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-type"] == CONTENT_TYPES[Path(path).suffix], path
            assert response.content == (STATIC / Path(path).name).read_bytes()


def test_every_response_limits_the_page_to_its_own_origin(server: LiveServer) -> None:
    with server.client() as client:
        for path in ("/", "/playground/app.js", "/playground/style.css"):
            policy = client.get(path).headers["content-security-policy"]
            directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
            assert directives["default-src"] == "'self'"
            assert directives["connect-src"] == "'self'"
            assert "http" not in policy


def test_no_file_of_the_page_names_another_origin() -> None:
    offenders = [
        f"{path.name}: {match.group(0)}"
        for path in _static_files()
        for match in _URL.finditer(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
    assert len(_static_files()) >= 8  # the check read the real folder


def test_the_page_calls_the_api_by_paths_relative_to_itself() -> None:
    absolute = re.compile(r"""(?:request|getJson|fetch)\(\s*[`"']/""")
    scripts = [path for path in _static_files() if path.suffix == ".js"]
    calls = [path.name for path in scripts if "getJson(" in path.read_text(encoding="utf-8")]
    assert calls  # the pattern looks at the real calls
    assert [p.name for p in scripts if absolute.search(p.read_text(encoding="utf-8"))] == []


def test_an_unknown_or_escaping_asset_name_is_a_native_404(server: LiveServer) -> None:
    with server.client() as client:
        for path in (
            "/playground/nope.js",
            "/playground/..%2Frouter.py",
            "/playground/%2E%2E%2F%2E%2E%2Fapp.py",
            "/playground/__init__.py",
        ):
            response = client.get(path)
            assert response.status_code == 404, path
            assert response.json()["error"]["code"] == "not_found", path


def test_the_page_is_not_an_api_operation(server: LiveServer) -> None:
    with server.client() as client:
        paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths
    assert not [path for path in paths if path.startswith("/playground")]


def test_the_package_data_ships_every_file_of_the_page() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["batchvision"]
    package = STATIC.parents[2]  # src/batchvision
    for path in _static_files():
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative
