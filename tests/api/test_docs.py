"""`/docs` and `/redoc` work with no network: every asset they load is served by the app itself,
and real headless Chromium renders both pages while every request off the server is refused."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from playwright.sync_api import Page, Route, sync_playwright

from accounts.accounts_support import keyed_server
from conftest import LiveServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CONTENT_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


class _Assets(HTMLParser):
    """Every URL a page loads: script src, link href, img src."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src"}.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.urls.append(value)


def _assets_of(page: str) -> list[str]:
    parser = _Assets()
    parser.feed(page)
    return parser.urls


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_page_loads_only_same_origin_assets_served_with_their_content_type(
    live_server: LiveServer, page: str
) -> None:
    with live_server.client() as client:
        response = client.get(page)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        html = response.text
        assert "http://" not in html and "https://" not in html and "cdn" not in html.lower()
        assets = _assets_of(html)
        assert len(assets) >= 2  # the script and the favicon at least
        for url in assets:
            absolute = urljoin(live_server.url + page, url)
            assert urlsplit(absolute).netloc == urlsplit(live_server.url).netloc, url
            asset = client.get(absolute)
            assert asset.status_code == 200, url
            suffix = "." + url.rsplit(".", 1)[-1]
            assert CONTENT_TYPES[suffix] in asset.headers["content-type"], url
            assert len(asset.content) > 1000, url


def test_docs_pages_stay_out_of_the_openapi_and_a_missing_asset_is_404(
    live_server: LiveServer,
) -> None:
    with live_server.client() as client:
        paths = client.get("/openapi.json").json()["paths"]
        assert not [p for p in paths if p.startswith(("/docs", "/redoc"))]
        missing = client.get("/docs/assets/no-such-file.js")
        assert missing.status_code == 404


def _distinct(page: Page, selector: str) -> int:
    """Elements matching `selector`, those with one id counted once (ReDoc renders an
    operation twice while it lays out the page)."""
    keys = page.eval_on_selector_all(selector, "found => found.map(e => e.id || e.outerHTML)")
    return len(set(keys))


def _render_offline(url: str, ready: str, *counted: str) -> tuple[dict[str, int], list[str]]:
    """Open `url` in headless Chromium, refusing every request that is not to the server, and
    wait for `ready`; how many distinct elements match `ready` and each of `counted`, and the
    refused URLs."""
    origin = urlsplit(url).netloc
    refused: list[str] = []

    def only_same_origin(route: Route) -> None:
        if urlsplit(route.request.url).netloc == origin:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            page = browser.new_page()
            page.route("**/*", only_same_origin)
            page.goto(url)
            page.wait_for_selector(ready, timeout=30_000)
            counts = {selector: _distinct(page, selector) for selector in (ready, *counted)}
            return counts, refused
        finally:
            browser.close()


def test_swagger_ui_renders_every_operation_with_no_network(live_server: LiveServer) -> None:
    spec = httpx.get(f"{live_server.url}/openapi.json").json()
    operations = sum(len(item) for item in spec["paths"].values())
    shown, refused = _render_offline(f"{live_server.url}/docs", ".opblock")
    assert refused == []
    assert shown[".opblock"] == operations


def test_redoc_renders_the_operations_with_no_network(live_server: LiveServer) -> None:
    spec = httpx.get(f"{live_server.url}/openapi.json").json()
    operations = sum(len(item) for item in spec["paths"].values())
    sections = "div[id^='operation/']"
    shown, refused = _render_offline(f"{live_server.url}/redoc", sections)
    assert refused == []
    assert shown[sections] == operations


def test_authorize_then_try_it_out_sends_the_key_and_gets_200(
    serve: Callable[..., LiveServer],
) -> None:
    """A person's first call from /docs: "Authorize" with a key in the bearer scheme, then "Try
    it out" on GET /v1/skills against a server that requires keys."""
    keyed = keyed_server(serve)
    secret = keyed.store.create("docs-reader").secret
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            page = browser.new_page()
            page.goto(f"{keyed.live.url}/docs")
            page.click("button.authorize")
            bearer = page.locator(".auth-container", has_text="bearer (http, Bearer)")
            bearer.locator("input").fill(secret)
            bearer.locator("button.authorize").click()
            page.click("button.btn-done")
            operation = page.locator("#operations-native-list_skills_v1_skills_get")
            operation.locator(".opblock-summary").click()
            operation.locator("button.try-out__btn").click()
            operation.locator("button.execute").click()
            status = operation.locator(
                ".live-responses-table tr.response .response-col_status"
            ).first
            status.wait_for(timeout=30_000)
            assert status.inner_text().strip() == "200"
            assert "detect" in operation.locator(".live-responses-table").inner_text()
        finally:
            browser.close()


def test_authorize_with_oauth_client_credentials_gets_a_token_from_the_server(
    serve: Callable[..., LiveServer],
) -> None:
    """The BitMind scheme's "Authorize": Swagger UI posts the client id and secret to the
    document's tokenUrl and holds the access token it gets back."""
    keyed = keyed_server(serve)
    created = keyed.store.create("docs-oauth", oauth=True)
    assert created.info.oauth_client_id and created.client_secret
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            page = browser.new_page()
            page.goto(f"{keyed.live.url}/docs")
            page.click("button.authorize")
            oauth = page.locator(".auth-container", has_text="bitmindOAuth")
            oauth.locator("input[data-name=clientId]").fill(created.info.oauth_client_id)
            oauth.locator("input[data-name=clientSecret]").fill(created.client_secret)
            with page.expect_response("**/v1/oauth/token") as token:
                oauth.locator("button.authorize").click()
            assert token.value.status == 200
            assert token.value.json()["token_type"] == "Bearer"
            oauth.locator("button.authorize", has_text="Logout").wait_for(timeout=10_000)
        finally:
            browser.close()
