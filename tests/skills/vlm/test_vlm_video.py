"""Vision-language skills on video frames, against the stand-in VLM server: each sampled frame
is sent, and each call that answered costs `credits_per_vlm_call` beside the video's
`credits_per_video` (what was reserved for `max_frames` and not called is handed back)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from batchvision.accounts.keys import KeyStore
from batchvision.core.db import make_engine
from conftest import EVALDATA, LiveServer
from vlm_standin import VlmStandin

BABOON = EVALDATA / "video" / "zamba_gorongosa_baboon_07120049.AVI"


def caption_video(live: LiveServer, secret: str, **fields: str) -> dict[str, Any]:
    with live.client() as client:
        response = client.post(
            "/v1/analyze",
            files=[("videos", (BABOON.name, BABOON.read_bytes(), "video/x-msvideo"))],
            data={"tasks": "caption", **fields},
            headers={"Authorization": f"Bearer {secret}"},
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_frames_are_captioned_and_each_answered_call_is_billed(
    serve: Callable[..., LiveServer], vlm_standin: VlmStandin
) -> None:
    live = serve(
        vlm_url=vlm_standin.url,
        vlm_model="qwen2.5vl:7b",
        auth="required",
        credits_per_video=5,
        credits_per_vlm_call=3,
        vlm_attempts=1,
    )
    store = KeyStore(make_engine(live.settings))
    key = store.create("video-captions", credits=100)
    [video] = caption_video(live, key.secret, fps="1", max_frames="4")["videos"]
    assert video["status"] == "ok" and len(video["frames"]) == 4
    captions = [frame["outputs"]["caption"]["caption"] for frame in video["frames"]]
    assert all(captions) and len(vlm_standin.requests) == 4
    assert video["summary"]["skills"] == {"caption": {"frames": 4}}
    info = store.get(key.info.id)
    assert info is not None and info.credits == 100 - (5 + 4 * 3)

    vlm_standin.fail_next("500")  # one frame's call fails: that frame's error, not billed
    [video] = caption_video(live, key.secret, fps="1", max_frames="4")["videos"]
    failed = [frame for frame in video["frames"] if frame["errors"]]
    assert len(failed) == 1 and video["summary"]["frames_failed"] == 1
    info = store.get(key.info.id)
    assert info is not None and info.credits == 100 - (5 + 4 * 3) - (5 + 3 * 3)
