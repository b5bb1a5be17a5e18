"""ONNX Runtime sessions that take a real batch whenever the graph allows it.

Many detector exports fix the batch dimension at 1 (in the input shape and in Reshape constants).
On CPU a batch of 8 halves the per-image cost of YOLOX-nano, so at load time we try to make the
batch dimension dynamic, and keep that only if a batch of two gives the same outputs as two
single runs. Otherwise items are run one by one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from batchvision.core.settings import Settings
from batchvision.models.decoders import FloatArray

log = logging.getLogger(__name__)


def _session_options(intra_threads: int, inter_threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_threads
    options.inter_op_num_threads = inter_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # ORT's workers spin while idle by default; on a small CPU they then steal cycles from the
    # decode threads and the event loop (measured: ~20% more CPU per image at equal throughput).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Failures still raise; the batch probe is expected to fail on some graphs, quietly.
    options.log_severity_level = 4
    return options


def _dynamic_batch_graph(model: onnx.ModelProto) -> bytes | None:
    """The graph with its leading dimension symbolic, or None if nothing needed changing."""
    first_input = model.graph.input[0].type.tensor_type.shape.dim[0]
    if first_input.dim_param:
        return None
    initializers = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Reshape" and node.input[1] in initializers:
            target = initializers[node.input[1]]
            shape = numpy_helper.to_array(target).copy()
            if shape.ndim == 1 and shape.size and shape[0] == 1:
                shape[0] = 0  # 0 = copy the dimension from the input: the batch
                target.CopyFrom(numpy_helper.from_array(shape, target.name))
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    del model.graph.value_info[:]
    return bytes(model.SerializeToString())


class OnnxModel:
    """One loaded graph. `run` takes a stacked image batch and returns per-item outputs."""

    def __init__(
        self, path: Path, *, intra_threads: int, inter_threads: int, batch_probe: bool = True
    ) -> None:
        self.path = path
        options = _session_options(intra_threads, inter_threads)
        self.session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.batchable = False
        if batch_probe:  # callers that run items one by one skip the probe's three runs
            self._try_batching(options)

    def _try_batching(self, options: ort.SessionOptions) -> None:
        try:
            patched = _dynamic_batch_graph(onnx.load(str(self.path)))
            candidate = (
                self.session
                if patched is None
                else ort.InferenceSession(
                    patched, sess_options=options, providers=["CPUExecutionProvider"]
                )
            )
            if self._batch_matches_singles(candidate):
                self.session, self.batchable = candidate, True
        except Exception as exc:  # any failure just means "run items one by one"
            log.info("model %s runs one image at a time: %s", self.path.name, exc)

    def _feeds(self, images: FloatArray) -> dict[str, np.ndarray]:
        feeds: dict[str, np.ndarray] = {self.input_names[0]: images}
        height, width = images.shape[2], images.shape[3]
        for name in self.input_names[1:]:
            # DETR-style exports take the frame their boxes should be expressed in.
            feeds[name] = np.tile(np.array([[width, height]], dtype=np.int64), (len(images), 1))
        return feeds

    def _batch_matches_singles(self, session: ort.InferenceSession) -> bool:
        shape = session.get_inputs()[0].shape
        size = [d if isinstance(d, int) else 64 for d in shape[1:]]
        probe = np.random.default_rng(0).random((2, *size), dtype=np.float32)
        together = session.run(None, self._feeds(probe))
        for index in range(2):
            alone = session.run(None, self._feeds(probe[index : index + 1]))
            for joint, single in zip(together, alone, strict=True):
                if joint.shape[0] != 2 or not np.allclose(joint[index], single[0], atol=1e-4):
                    return False
        return True

    def run(self, images: FloatArray) -> list[list[FloatArray]]:
        """`images` is [B, ...] in the card's layout (NCHW, or NHWC for some classifiers);
        returns B lists of outputs without the batch dimension."""
        if self.batchable:
            outputs = self.session.run(None, self._feeds(images))
            return [[out[i] for out in outputs] for i in range(len(images))]
        return [self._run_single(images[i : i + 1]) for i in range(len(images))]

    def _run_single(self, image: FloatArray) -> list[FloatArray]:
        outputs = self.session.run(None, self._feeds(image))
        # Exports that squeeze the batch axis (DETR-style) already return per-item shapes.
        return [out[0] if out.ndim > 1 and out.shape[0] == 1 else out for out in outputs]


def open_onnx(path: Path, settings: Settings, *, batch_probe: bool = True) -> OnnxModel:
    return OnnxModel(
        path,
        intra_threads=settings.ort_intra_op_threads,
        inter_threads=settings.ort_inter_op_threads,
        batch_probe=batch_probe,
    )
