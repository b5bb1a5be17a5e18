"""The model contract: one output per item or a loud error, in a model's own batch run and
through the engine's batcher, and kinds chosen from the card."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from batchvision.core.settings import Settings
from batchvision.engine.engine import Engine
from batchvision.models.base import Availability, BatchContractError, Model
from batchvision.models.cards import ModelCard
from batchvision.models.files import ModelFiles, file_availability
from batchvision.models.kinds import KINDS
from batchvision.models.registry import ModelRegistry
from batchvision.models.runtime import OnnxModel, open_onnx

WIDTH = 4


def batch_sum_graph() -> onnx.ModelProto:
    """x [N, 4] → the sum over the batch, [1, 4]: one row whatever the batch size."""
    node = helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [0])
    graph = helper.make_graph(
        [node],
        "batch-sum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, WIDTH])],
        initializer=[axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


class RowModel(Model[float, np.ndarray, np.ndarray, float]):
    """A kind that trusts its graph to return one row per input: wrong for the batch-sum graph,
    which the contract must catch."""

    task = "rows"
    family = "onnx"

    def __init__(self, card: ModelCard, model: OnnxModel) -> None:
        super().__init__(card)
        self.model = model

    @classmethod
    def inspect(cls, card: ModelCard, files: ModelFiles) -> Availability:
        return file_availability(card, files, classes=None)

    @classmethod
    def load(cls, card: ModelCard, files: ModelFiles) -> Self:
        path = cls.inspect(card, files).require().path
        assert path is not None
        return cls(card, open_onnx(path, files.settings))

    def memory_mb(self) -> int:
        return 1

    def preprocess(self, item: float) -> np.ndarray:
        return np.full(WIDTH, item, np.float32)

    def predict(self, batch: list[np.ndarray]) -> Sequence[np.ndarray]:
        (rows,) = self.model.session.run(None, {"x": np.stack(batch)})
        return list(rows)

    def postprocess(self, raw: np.ndarray, item: np.ndarray) -> float:
        return float(raw.sum())


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    onnx.save(batch_sum_graph(), str(tmp_path / "sum.onnx"))
    card = ModelCard(name="sum", task="rows", family="onnx", file="sum.onnx")
    settings = Settings(model_dirs=[tmp_path], worker_threads=2, ort_intra_op_threads=1)
    kinds = {**KINDS, ("rows", "onnx"): RowModel}
    return ModelRegistry(settings, {"sum": card}, kinds)


def test_a_batch_of_one_keeps_the_contract(registry: ModelRegistry) -> None:
    model = registry.model("sum")
    assert model.run_batch([model.preprocess(2.0)]) == [8.0]


def test_fewer_outputs_than_inputs_is_a_loud_error(registry: ModelRegistry) -> None:
    model = registry.model("sum")
    with pytest.raises(BatchContractError, match="model 'sum' returned 1 results for 3 items"):
        model.run_batch([model.preprocess(v) for v in (1.0, 2.0, 3.0)])


def test_through_the_engine_every_caller_of_a_broken_batch_gets_the_error(
    registry: ModelRegistry,
) -> None:
    async def main() -> list[Any]:
        engine = Engine(registry.settings, registry)
        try:
            calls = (engine.infer("sum", float(v)) for v in range(3))
            return list(await asyncio.gather(*calls, return_exceptions=True))
        finally:
            await engine.close()

    results = asyncio.run(main())
    assert results and all(isinstance(r, BatchContractError) for r in results)


def test_every_kind_declares_the_task_and_family_it_is_listed_under() -> None:
    for (task, family), kind in KINDS.items():
        assert (kind.task, kind.family) == (task, family)
    assert {("detect", "yolox"), ("detect", "detr"), ("classify", "speciesnet")} <= set(KINDS)
    assert {("ocr", "tesseract"), ("ocr", "ppocr")} <= set(KINDS)
