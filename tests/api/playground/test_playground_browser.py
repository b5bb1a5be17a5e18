"""The playground in real headless Chromium against the real app over HTTP: paste a key,
upload a COCO photo, run detect, and check the boxes in the DOM and in the pixels of a
screenshot (likewise barcode outlines, OCR word polygons, VLM points, a video's frames); the
curl command the page offers gives the same answer from a shell; the parameter form and the
JSON editor agree; a small job's progress bar reaches the end, another is cancelled from the
page; the usage page shows what the key did."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from batchvision.accounts.keys import KeyStore
from batchvision.core.db import make_engine
from conftest import COCO_IMAGES, EVALDATA, LiveServer, make_settings, start_server
from vlm_standin import run_standin, square_image

CHROMIUM = Path("/usr/bin/chromium")
# A cat and a laptop beside it (and a tv the nano model misses).
PHOTO = COCO_IMAGES / "000000004795.jpg"
TIMEOUT_MS = 30_000
PALETTE_GREEN = "#00e676"
_TOLERANCE = 40  # per channel: the screenshot is the canvas scaled, so edges blend a little


def _playwright() -> Any:
    """Playwright driving Debian's Chromium; a clear failure, not a skip, when either is missing
    (`make test` installs both)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: pip install playwright")
    return sync_playwright


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # One line per chunk, one chunk at a time: a job's progress moves in steps the page can show.
    with run_standin() as vlm:
        settings = make_settings(
            tmp_path_factory.mktemp("playground"),
            auth="required",
            job_chunk_lines=1,
            job_parallel_chunks=1,
            vlm_url=vlm.url,
        )
        live = start_server(settings)
        yield live
        live.stop()


@pytest.fixture(scope="module")
def secret(server: LiveServer) -> str:
    return KeyStore(make_engine(server.settings)).create("playground", credits=1000).secret


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with _playwright()() as driver:
        chromium = driver.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, server: LiveServer) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda message: problems.append(message.text) if _bad(message) else None)
    page.goto(server.url + "/")
    yield page
    context.close()
    assert problems == []


def _bad(message: Any) -> bool:
    """A script error; not the browser's own note on a refused request (401 before the key is
    pasted), which the page answers itself."""
    return message.type == "error" and "Failed to load resource" not in message.text


def _paste_key(page: Any, secret: str) -> None:
    page.fill("#api-key", secret)
    page.click("#save-key")
    page.wait_for_selector("#skill option[value='detect']", state="attached")


def _hex(color: str) -> tuple[int, int, int]:
    value = color.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def _has_color(
    image: Image.Image, box: tuple[int, int, int, int], color: tuple[int, int, int]
) -> bool:
    """Whether a pixel in `box` is within a small distance of `color` on every channel."""
    region = np.asarray(image.convert("RGB").crop(box), dtype=np.int16)
    return bool((np.abs(region - np.array(color)) <= _TOLERANCE).all(axis=-1).any())


def _edge_windows(box: list[float], scale: float, reach: int) -> list[tuple[int, int, int, int]]:
    """Small windows across the middle of the box's left and bottom edges, in screenshot pixels
    (the label tag covers part of the top edge)."""
    x1, y1, x2, y2 = (round(v * scale) for v in box)
    mid_x, mid_y = (x1 + x2) // 2, (y1 + y2) // 2
    return [
        (x1 - reach, mid_y - reach, x1 + reach + 1, mid_y + reach + 1),
        (mid_x - reach, y2 - reach, mid_x + reach + 1, y2 + reach + 1),
    ]


def _run(page: Any, image: Path, skill: str) -> dict[str, Any]:
    """Choose `image`, run `skill` with its default parameters; the page's JSON response."""
    page.set_input_files("#files", str(image))
    page.select_option("#skill", skill)
    page.click("#run")
    page.wait_for_selector(f"figure.result .legend li[data-skill='{skill}']")
    body: dict[str, Any] = json.loads(page.text_content("#json"))
    return body


def _drawn(page: Any, image: Path, width: int) -> tuple[Image.Image, Image.Image, float]:
    """The canvas as the screen shows it, the photo at that size, and the scale between them."""
    canvas = page.query_selector("figure.result canvas")
    shot = Image.open(io.BytesIO(canvas.screenshot()))
    return shot, Image.open(image).resize(shot.size), shot.width / width


def _assert_outlined(
    page: Any, image: Path, width: int, boxes: list[tuple[list[float], str]]
) -> None:
    """Each box's colour is on its left and bottom edges in the screenshot and was not there
    in the photo: the drawing put it where the JSON says."""
    shot, photo, scale = _drawn(page, image, width)
    for box, color in boxes:
        for window in _edge_windows(box, scale, reach=4):
            assert _has_color(shot, window, _hex(color)), (box, window)
            assert not _has_color(photo, window, _hex(color)), (box, window)


def _bounds(polygon: list[list[float]]) -> list[float]:
    xs, ys = [x for x, _ in polygon], [y for _, y in polygon]
    return [min(xs), min(ys), max(xs), max(ys)]


def test_detect_draws_labelled_boxes_where_the_json_puts_them(page: Any, secret: str) -> None:
    _paste_key(page, secret)
    assert page.evaluate("localStorage.getItem('batchvision.apiKey')") == secret
    body = _run(page, PHOTO, "detect")
    objects = body["results"][0]["outputs"]["detect"]["objects"]
    truth = json.loads((EVALDATA / "coco" / "labels.json").read_text())[PHOTO.name]
    assert (
        {"cat", "laptop"} <= {o["label"] for o in objects} <= {o["class"] for o in truth["objects"]}
    )

    items = page.query_selector_all("figure.result .legend li[data-skill='detect']")
    listed = [item.text_content().strip() for item in items]
    assert listed == [f"{o['label']} {o['score']:.2f}" for o in objects]

    colors = [item.get_attribute("data-color") for item in items]
    width = body["results"][0]["image"]["width"]
    _assert_outlined(
        page, PHOTO, width, [(o["box"], c) for o, c in zip(objects, colors, strict=True)]
    )


def test_barcode_outlines_carry_the_decoded_text(page: Any, secret: str) -> None:
    _paste_key(page, secret)
    image = EVALDATA / "barcodes" / "images" / "code128-1_1.png"
    body = _run(page, image, "barcode")
    (code,) = body["results"][0]["outputs"]["barcode"]["barcodes"]
    truth = json.loads((EVALDATA / "barcodes" / "labels.json").read_text())[image.name]
    assert (code["format"], code["text"]) == (truth["format"], truth["text"])
    item = page.query_selector("figure.result .legend li[data-skill='barcode']")
    assert item.text_content().strip() == f"{truth['format']}: {truth['text']}"
    width = body["results"][0]["image"]["width"]
    _assert_outlined(
        page, image, width, [(_bounds(code["polygon"]), item.get_attribute("data-color"))]
    )


def test_ocr_words_are_outlined_and_lines_listed_with_their_text(page: Any, secret: str) -> None:
    _paste_key(page, secret)
    image = EVALDATA / "ocr" / "multilang_lines" / "rapidocr_eslav.jpg"
    body = _run(page, image, "ocr")
    output = body["results"][0]["outputs"]["ocr"]
    lines = [line for block in output["pages"][0]["blocks"] for line in block["lines"]]
    words = [word for line in lines for word in line["words"]]
    assert "Славянские" in [word["text"] for word in words]
    items = page.query_selector_all("figure.result .legend li[data-skill='ocr']")
    assert [item.text_content().strip() for item in items] == [line["text"] for line in lines]
    word_color = PALETTE_GREEN  # words are outlined in the palette's green (draw.js)
    width = body["results"][0]["image"]["width"]
    _assert_outlined(page, image, width, [(_bounds(w["polygon"]), word_color) for w in words[:3]])


def test_vision_language_points_and_captions_are_shown(
    page: Any, secret: str, tmp_path: Path
) -> None:
    image = tmp_path / "square.jpg"
    image.write_bytes(square_image(320, 240, (100, 60, 180, 140)))
    _paste_key(page, secret)
    page.set_input_files("#files", str(image))
    page.select_option("#skill", "point")
    page.fill("#param-object", "red square")  # not a detector class: the VLM points
    page.click("#run")
    page.wait_for_selector("figure.result .legend li[data-skill='point']")
    (point,) = json.loads(page.text_content("#json"))["results"][0]["outputs"]["point"]["points"]
    assert 130 <= point["x"] <= 150 and 90 <= point["y"] <= 110  # the square's centre
    color = page.get_attribute("figure.result .legend li[data-skill='point']", "data-color")
    shot, photo, scale = _drawn(page, image, 320)
    x, y = round(point["x"] * scale), round(point["y"] * scale)
    assert _has_color(shot, (x - 2, y - 2, x + 3, y + 3), _hex(color))
    assert not _has_color(photo, (x - 2, y - 2, x + 3, y + 3), _hex(color))

    body = _run(page, image, "caption")
    caption = body["results"][0]["outputs"]["caption"]["caption"]
    assert re.match(r"\d+x\d+ mean \(", caption), caption  # the stand-in describes the image
    legend = page.text_content("figure.result .legend li[data-skill='caption']")
    assert legend.strip() == caption


def test_copy_as_curl_gives_the_same_answer_from_a_shell(page: Any, secret: str) -> None:
    _paste_key(page, secret)
    page.set_input_files("#files", str(PHOTO))
    page.fill("#param-threshold", "0.5")
    page.click("#run")
    page.wait_for_selector("figure.result .legend li")
    page.click("#copy-curl")
    command = page.text_content("#curl")
    assert "$BATCHVISION_API_KEY" in command
    assert secret not in command
    assert shutil.which("curl"), "curl is missing: apt-get install curl"
    env = {**os.environ, "BATCHVISION_API_KEY": secret}
    run = subprocess.run(
        ["bash", "-c", command],
        cwd=COCO_IMAGES,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    from_shell = json.loads(run.stdout)
    from_page = json.loads(page.text_content("#json"))
    assert from_shell["tasks"] == from_page["tasks"]
    assert from_shell["tasks"][0]["params"]["threshold"] == 0.5
    assert from_shell["results"][0]["outputs"] == from_page["results"][0]["outputs"]


def _jsonl(tmp_path: Path, count: int) -> Path:
    line = {"skill": "detect", "image": _b64(PHOTO)}
    path = tmp_path / "batch.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", **line}) + "\n" for i in range(count)))
    return path


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


# Records each state every job's row shows, so the test sees a bar move, not just its end.
_WATCH = """() => {
  window.seen = {};
  new MutationObserver(() => {
    for (const row of document.querySelectorAll('#jobs-table tbody tr')) {
      const bar = row.querySelector('progress');
      const entry = `${row.dataset.status} ${bar.value}/${bar.max}`;
      const seen = (window.seen[row.dataset.jobId] ||= []);
      if (seen[seen.length - 1] !== entry) seen.push(entry);
    }
  }).observe(document.querySelector('#jobs-table tbody'), {childList: true, subtree: true});
}"""


def _submit_from_the_jobs_page(page: Any, jsonl: Path) -> str:
    """Submit `jsonl` with the page's file input; the new job's id."""
    page.click("nav a[data-page='jobs']")
    page.wait_for_selector("#page-jobs:not([hidden])")
    page.evaluate(_WATCH)
    page.set_input_files("#job-file", str(jsonl))
    page.click("#submit-job")
    page.wait_for_selector("#jobs-table[data-submitted]")
    job_id: str = page.get_attribute("#jobs-table", "data-submitted")
    return job_id


def test_a_submitted_job_shows_its_progress_bar_reach_the_end(
    page: Any, server: LiveServer, secret: str, tmp_path: Path
) -> None:
    _paste_key(page, secret)
    job_id = _submit_from_the_jobs_page(page, _jsonl(tmp_path, 4))
    row = page.wait_for_selector(f"tr[data-job-id='{job_id}'][data-status='completed']")
    bar = row.query_selector("progress")
    assert (bar.get_attribute("value"), bar.get_attribute("max")) == ("4", "4")
    seen = page.evaluate("window.seen")[job_id]
    assert seen[-1] == "completed 4/4"
    assert any(entry.startswith(("chunking", "processing")) for entry in seen), seen
    with server.client(headers={"Authorization": f"Bearer {secret}"}) as client:
        assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "completed"
        link = row.query_selector("a.download").get_attribute("href")
        lines = client.get(link).text.splitlines()  # a signed link: no key needed
    assert [json.loads(line)["id"] for line in lines] == ["p0", "p1", "p2", "p3"]
    with page.expect_download() as download:
        row.query_selector("button.results").click()
    assert download.value.suggested_filename == f"{job_id}.jsonl"
    assert Path(download.value.path()).read_text().splitlines() == lines


def test_cancel_on_the_jobs_page_stops_a_running_job(
    page: Any, server: LiveServer, secret: str, tmp_path: Path
) -> None:
    _paste_key(page, secret)
    job_id = _submit_from_the_jobs_page(page, _jsonl(tmp_path, 40))
    page.click(f"tr[data-job-id='{job_id}'] button.cancel")
    row = page.wait_for_selector(f"tr[data-job-id='{job_id}'][data-status='cancelled']")
    bar = row.query_selector("progress")
    assert int(bar.get_attribute("value")) < int(bar.get_attribute("max")) == 40
    assert row.query_selector("button.cancel") is None
    with server.client(headers={"Authorization": f"Bearer {secret}"}) as client:
        job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "cancelled"
    assert job["progress"]["completed"] == int(bar.get_attribute("value"))


def test_without_a_key_the_page_says_where_to_put_one(page: Any) -> None:
    alert = page.wait_for_selector("#status[data-kind='error']")
    assert "unauthorized" in alert.text_content()
    assert "paste an API key" in alert.text_content()
    assert page.query_selector_all("#skill option") == []


def _first_frame(path: Path) -> Image.Image:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        image: Image.Image = frame.to_image()
        return image


def test_a_video_shows_each_sampled_frame_with_its_boxes(page: Any, secret: str) -> None:
    _paste_key(page, secret)
    video = EVALDATA / "video" / "intel_bottle-detection.mp4"
    page.set_input_files("#files", str(video))
    page.fill("#fps", "0.2")  # a frame every 5 s of the 40 s clip
    page.click("#run")
    page.wait_for_selector("figure.video .legend li[data-skill='detect']")
    (result,) = json.loads(page.text_content("#json"))["videos"]
    frames = result["frames"]
    assert len(frames) == 8
    objects = frames[0]["outputs"]["detect"]["objects"]
    assert "bottle" in {o["label"] for o in objects}
    items = page.query_selector_all("figure.video .legend li[data-skill='detect']")
    assert [i.text_content().strip() for i in items] == [
        f"{o['label']} {o['score']:.2f}" for o in objects
    ]
    shot = Image.open(io.BytesIO(page.query_selector("figure.video canvas").screenshot()))
    photo = _first_frame(video).resize(shot.size)
    scale = shot.width / result["video"]["width"]
    for item, found in zip(items, objects, strict=True):
        color = _hex(item.get_attribute("data-color"))
        for window in _edge_windows(found["box"], scale, reach=4):
            assert _has_color(shot, window, color), (found, window)
            assert not _has_color(photo, window, color), (found, window)

    last = frames[-1]
    page.eval_on_selector(
        "figure.video input[type=range]",
        "(slider, value) => { slider.value = value; slider.dispatchEvent(new Event('input')); }",
        str(len(frames) - 1),
    )
    page.wait_for_selector(f"figure.video span:text('frame {last['number']} at')")
    shown = page.query_selector_all("figure.video .legend li[data-skill='detect']")
    assert [i.text_content().strip() for i in shown] == [
        f"{o['label']} {o['score']:.2f}" for o in last["outputs"]["detect"]["objects"]
    ]


# A drop of real files, as a desktop drag would deliver them (Playwright cannot drag from the OS).
_DROP = """([name, type, data]) => {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, {type}));
  return transfer;
}"""


def test_dropped_images_become_job_lines_with_the_chosen_skill(page: Any, secret: str) -> None:
    _paste_key(page, secret)
    image = EVALDATA / "barcodes" / "images" / "code128-1_1.png"
    transfer = page.evaluate_handle(_DROP, [image.name, "image/png", _b64(image)])
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    assert page.text_content("#chosen li").startswith(image.name)
    page.select_option("#skill", "barcode")
    page.fill("#param-max_symbols", "3")
    page.click("nav a[data-page='jobs']")
    page.click("#job-from-images")
    page.wait_for_function("() => document.querySelector('#job-lines').value.length > 0")
    (line,) = [json.loads(text) for text in page.input_value("#job-lines").splitlines()]
    assert line == {"id": image.name, "skill": "barcode", "image": _b64(image), "max_symbols": 3}


def test_the_json_editor_and_the_form_edit_the_same_parameters(page: Any, secret: str) -> None:
    _paste_key(page, secret)
    page.select_option("#skill", "detect")
    shown = json.loads(page.input_value("#params-json"))
    assert shown["threshold"] == 0.25  # the schema's defaults, from GET /v1/skills
    assert shown["model"] == "yolox-nano"
    page.click("details summary")
    page.fill("#params-json", json.dumps({**shown, "threshold": 0.7, "classes": ["cat"]}))
    page.click("#apply-json")
    assert page.input_value("#param-threshold") == "0.7"
    assert page.input_value("#param-classes") == "cat"
    page.fill("#param-model", "")  # an emptied box means the default, not null
    assert '"params":{"threshold":0.7,"classes":["cat"]}' in page.text_content("#curl")
    body = _run(page, PHOTO, "detect")
    assert body["tasks"][0]["params"]["threshold"] == 0.7
    labels = [o["label"] for o in body["results"][0]["outputs"]["detect"]["objects"]]
    assert labels == ["cat"]


def test_the_usage_page_shows_the_keys_usage(page: Any, server: LiveServer, secret: str) -> None:
    _paste_key(page, secret)
    with server.client(headers={"Authorization": f"Bearer {secret}"}) as client:
        client.post("/v1/analyze", files=[("images", ("a.jpg", PHOTO.read_bytes()))])
        usage = client.get("/v1/usage").json()
    page.click("nav a[data-page='usage']")
    page.wait_for_selector("#usage-table tbody tr")
    assert page.text_content("dd[data-field='images']") == str(usage["totals"]["images"])
    assert page.text_content("dd[data-field='balance']") == str(usage["balance"])
    today = usage["days"][-1]
    cells = page.query_selector_all(f"#usage-table tr[data-date='{today['date']}'] td")
    assert [c.text_content() for c in cells][1:3] == [str(today["requests"]), str(today["images"])]
    assert page.query_selector_all("#usage-chart .bar")
