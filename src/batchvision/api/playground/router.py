"""The playground: a page at `/` for trying the native API in a browser (analyze with results
drawn on the image, jobs with live progress, usage), served from files in this package.

The page is plain ES modules and CSS with no build step and no network beyond this server:
the Content-Security-Policy below lets it talk to its own origin only, so a page that reached
for a CDN would break in every browser, not just offline ones. The API key is typed into the
page and kept in the browser's localStorage; the server serves these files without one.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from batchvision.core.errors import BatchVisionError, ErrorCode, echo

STATIC = Path(__file__).parent / "static"
ASSET_PREFIX = "/playground/"

# Module scripts must be served with a JavaScript type, or browsers refuse to run them.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Same origin only; images, videos and downloads the page makes itself are blob: URLs.
POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_HEADERS = {"Content-Security-Policy": POLICY, "Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


def assets() -> dict[str, Path]:
    """The files the page may load, by name: a fixed list, so no request names another path."""
    return {
        path.name: path
        for path in sorted(STATIC.iterdir())
        if path.is_file() and path.suffix in CONTENT_TYPES
    }


_ASSETS = assets()


def _file(path: Path) -> FileResponse:
    return FileResponse(path, media_type=CONTENT_TYPES[path.suffix], headers=_HEADERS)


@router.get("/")
async def playground() -> FileResponse:
    return _file(STATIC / "index.html")


@router.get(ASSET_PREFIX + "{name}")
async def asset(name: str) -> FileResponse:
    path = _ASSETS.get(name)
    if path is None:
        raise BatchVisionError(ErrorCode.NOT_FOUND, f"no playground file named {echo(name)!r}")
    return _file(path)
