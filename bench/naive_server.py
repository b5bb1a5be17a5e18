"""The baseline for bench_detect.py: a typical glued-together FastAPI detection server.

One image per request (`UploadFile`), full-resolution Pillow decode (no JPEG draft mode), the
YOLOX-nano preprocessing done by hand, and `session.run` called synchronously inside the request
handler on the event loop. No batching, no worker pool. It borrows batchvision's YOLOX decoder
only so its boxes are comparable; none of batchvision's intake, engine or pipeline is used.

    python bench/naive_server.py --model ../shared/models/yolox_nano/yolox_nano.onnx --port 8001
"""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, File, UploadFile
from PIL import Image

from batchvision.models.decoders import DecodeParams, decode_yolox

INPUT_SIDE = 416
PAD_VALUE = 114
PARAMS = DecodeParams(score_threshold=0.25, nms_iou=0.45, max_detections=100)


def make_session(model: Path, threads: int, spin: bool = True) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not spin:  # batchvision's setting (models/runtime.py): idle ORT workers sleep
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(
        str(model), sess_options=options, providers=["CPUExecutionProvider"]
    )


def preprocess(data: bytes) -> tuple[npt.NDArray[np.float32], float]:
    """Letterbox to the top-left of a 416x416 canvas padded with 114, BGR, 0-255, NCHW."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    ratio = min(INPUT_SIDE / image.width, INPUT_SIDE / image.height)
    size = (max(1, round(image.width * ratio)), max(1, round(image.height * ratio)))
    resized = np.asarray(image.resize(size, Image.Resampling.BILINEAR))
    canvas = np.full((INPUT_SIDE, INPUT_SIDE, 3), PAD_VALUE, dtype=np.uint8)
    canvas[: size[1], : size[0]] = resized
    tensor = canvas[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32)
    return np.ascontiguousarray(tensor), ratio


def create_app(model: Path, threads: int, spin: bool = True) -> FastAPI:
    session = make_session(model, threads, spin)
    input_name = session.get_inputs()[0].name
    app = FastAPI(title="naive detector")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/detect")
    async def detect(file: UploadFile = File(...)) -> dict[str, Any]:  # noqa: B008
        tensor, ratio = preprocess(await file.read())
        raw = session.run(None, {input_name: tensor})[0][0]
        dets = decode_yolox([raw], (INPUT_SIDE, INPUT_SIDE), PARAMS)
        boxes = dets.boxes / ratio
        return {
            "objects": [
                {"class_id": int(c), "score": round(float(s), 4), "box": b.round(2).tolist()}
                for b, s, c in zip(boxes, dets.scores, dets.class_ids, strict=True)
            ]
        }

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="naive one-image-per-request detector")
    parser.add_argument("--model", type=Path, required=True, help="yolox_nano.onnx")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ORT intra-op")
    parser.add_argument("--no-spin", action="store_true", help="ORT workers sleep when idle")
    args = parser.parse_args()
    app = create_app(args.model, args.threads, spin=not args.no_spin)
    uvicorn.run(app, host=args.host, port=args.port, workers=1, log_level="warning")


if __name__ == "__main__":
    main()
