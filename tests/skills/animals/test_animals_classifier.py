"""The `animals` skill with a species classifier card, end to end through the real app over HTTP.

No SpeciesNet weights are at hand, so each classifier here is a format-only graph written with
`onnx.helper`, shaped like SpeciesNet's always_crop model: input `crops` [batch, 480, 480, 3]
float, output [batch, L] with L the lines of the real label list. Its output is one constant
score row (the probabilities a test chooses), broadcast to the batch; the input still feeds the
output (mean x 0), so ONNX Runtime keeps the graph input and the batch dimension. The cards sit in
a temporary model directory listed before ../shared/models; their `labels` path points at the
real SpeciesNet label list, which the registry finds in ../shared/models.

The detector is the real yolox-nano. On ena24_9455.jpg (two American black bears) it finds two
animals: a `bear` box, labelled `bear family` on the detector's own, and a `cow` box overlapping
an `elephant` and a fainter `bear`, rolled up to `mammal` (see test_animals_skill.py). With a
classifier the image is decoded at full resolution (no JPEG draft), so the detector's scores and
boxes differ slightly from a run without one: tests compare runs of the same kind.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from batchvision.engine.engine import Engine
from batchvision.models.registry import ModelRegistry
from batchvision.skills.animals import AnimalsSkill, classifier_taxon
from batchvision.skills.base import SkillContext
from batchvision.taxonomy import SpeciesNetFiles, Taxonomy
from conftest import EVALDATA, MODELS, LiveServer, coco_image, error_of, make_settings, start_server

LABELS = "speciesnet_data/always_crop_99710272_22x8_v12_epoch_00148.labels.txt"
SIDE = 480
BEARS = EVALDATA / "camera_traps" / "images" / "ena24_9455.jpg"
ROOM = "000000000139.jpg"  # a living room with a person in it

BLACK_BEAR = "mammalia;carnivora;ursidae;ursus;americanus"  # its family is blocked in GBR
ASIATIC_BLACK_BEAR = "mammalia;carnivora;ursidae;ursus;thibetanus"
URSUS = "mammalia;carnivora;ursidae;ursus;"
CARNIVORA = "mammalia;carnivora;;;"
MAMMALIA = "mammalia;;;;"
HUMAN = "mammalia;primates;hominidae;homo;sapiens"
# One species from each of five mammal orders: at 0.12 each the class sums to 0.60.
FIVE_ORDERS = (
    BLACK_BEAR,
    "mammalia;artiodactyla;cervidae;odocoileus;virginianus",  # white-tailed deer
    "mammalia;lagomorpha;leporidae;lepus;europaeus",  # european hare
    "mammalia;rodentia;sciuridae;sciurus;niger",  # eastern fox squirrel
    "mammalia;didelphimorphia;didelphidae;didelphis;virginiana",  # virginia opossum
)

# The detector alone on the bears: each animal's best box's class -> its label.
DETECTOR_LABELS = {"bear": "bear family", "cow": "mammal"}


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    files = SpeciesNetFiles.find(MODELS / "speciesnet_data")
    return Taxonomy.from_files(files.taxonomy, MODELS / LABELS)


def probabilities(taxonomy: Taxonomy, chosen: Mapping[str, float]) -> np.ndarray:
    """A score row in label-list order: `chosen` keys get their score, the rest of the mass is
    spread evenly (so no other label comes near the top 5)."""
    keys = [taxon.key for taxon in taxonomy.labels]
    row = np.full(len(keys), (1.0 - sum(chosen.values())) / (len(keys) - len(chosen)))
    for key, score in chosen.items():
        row[keys.index(key)] = score  # each key chosen here is in the list once
    return row.astype(np.float32)


def classifier_graph(row: np.ndarray) -> onnx.ModelProto:
    """`scores` = mean(crops) x 0 + row, broadcast to [batch, L]."""

    def const(name: str, value: np.ndarray) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))

    nodes = [
        helper.make_node("ReduceMean", ["crops"], ["mean"], axes=[1, 2, 3], keepdims=0),
        const("shape", np.array([-1, 1], np.int64)),
        helper.make_node("Reshape", ["mean", "shape"], ["mean2"]),  # [batch, 1]
        const("zero", np.array(0.0, np.float32)),
        helper.make_node("Mul", ["mean2", "zero"], ["zeros"]),
        const("row", row[None]),  # [1, L]
        helper.make_node("Add", ["zeros", "row"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "speciesnet-format",
        [helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["batch", SIDE, SIDE, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", len(row)])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def card(name: str, *, softmax: bool = False) -> str:
    """The card a user writes for a SpeciesNet ONNX export (family defaults spelled out)."""
    return f"""
name = "{name}"
task = "classify"
family = "speciesnet"
file = "{name}/{name}.onnx"
input_size = [{SIDE}, {SIDE}]
labels = "{LABELS}"
softmax = {str(softmax).lower()}

[preprocess]
resize = "stretch"
layout = "NHWC"
channel_order = "RGB"
scale = {1 / 255!r}
"""


def install(models: Path, name: str, row: np.ndarray | None, *, softmax: bool = False) -> None:
    """A card, and its graph unless `row` is None (a card whose model was never downloaded)."""
    if row is not None:
        (models / name).mkdir()
        onnx.save(classifier_graph(row), str(models / name / f"{name}.onnx"))
    (models / f"{name}.card.toml").write_text(card(name, softmax=softmax), encoding="utf-8")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, taxonomy: Taxonomy) -> Path:
    """The user's model directory: the classifier cards (and their graphs)."""
    models = tmp_path_factory.mktemp("user_models")
    species = probabilities(taxonomy, {BLACK_BEAR: 0.9})
    # Cards load sorted by file name: `sn-absent` comes first but is not installed, so the
    # default classifier is `sn-class`.
    install(models, "sn-absent", None)
    install(models, "sn-class", probabilities(taxonomy, dict.fromkeys(FIVE_ORDERS, 0.14)))
    install(models, "sn-genus", probabilities(taxonomy, {BLACK_BEAR: 0.4, ASIATIC_BLACK_BEAR: 0.4}))
    install(models, "sn-species", species)
    install(models, "sn-spread", probabilities(taxonomy, dict.fromkeys(FIVE_ORDERS, 0.12)))
    # Logits: log-probabilities shifted by a constant, which the softmax takes back off.
    install(models, "sn-logits", np.log(species) + np.float32(3.0), softmax=True)
    return models


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, models: Path) -> Iterator[LiveServer]:
    settings = make_settings(tmp_path_factory.mktemp("live"), model_dirs=[models, MODELS])
    server = start_server(settings)
    yield server
    server.stop()


def analyze(client: httpx.Client, image: bytes, params: dict[str, Any]) -> httpx.Response:
    body = {
        "images": [{"data": base64.b64encode(image).decode()}],
        "tasks": [{"skill": "animals", "params": params}],
    }
    return client.post("/v1/analyze", json=body)


def run(client: httpx.Client, image: bytes, **params: Any) -> dict[str, Any]:
    response = analyze(client, image, params)
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    assert result["status"] == "ok", result
    output: dict[str, Any] = result["outputs"]["animals"]
    return output


def bears(client: httpx.Client, **params: Any) -> dict[str, Any]:
    out = run(client, BEARS.read_bytes(), **params)
    assert len(out["annotations"]) == 2, out  # both bears, whichever model labels them
    assert {a["category"] for a in out["annotations"]} == {"animal"}
    return out


def labels(out: dict[str, Any]) -> list[str]:
    return [a["label"] for a in out["annotations"]]


def by_detector_label(out: dict[str, Any]) -> dict[str, str]:
    return {a["detector_label"]: a["label"] for a in out["annotations"]}


def detections(out: dict[str, Any]) -> list[tuple[str, float, list[float]]]:
    return [(a["detector_label"], a["score"], a["box"]) for a in out["annotations"]]


def test_a_confident_species_is_the_label(live: LiveServer, taxonomy: Taxonomy) -> None:
    with live.client() as client:
        out = bears(client, classifier="sn-species")
        unsure = bears(client, classifier="sn-spread")
    assert out["model"] == "yolox-nano"
    assert out["model_version"] == "yolox-nano+sn-species-speciesnet-taxonomy"
    bear = taxonomy.by_key(BLACK_BEAR)
    assert labels(out) == ["american black bear", "american black bear"]
    for ann in out["annotations"]:
        assert ann["taxonomy"] == bear.to_dict()
    # the boxes and their scores stay the detector's; only the labels come from the classifier
    assert detections(out) == detections(unsure)
    assert {a["detector_label"] for a in out["annotations"]} == {"bear", "cow"}


def test_logits_are_softmaxed(live: LiveServer) -> None:
    with live.client() as client:
        out = bears(client, classifier="sn-logits")
    assert labels(out) == ["american black bear", "american black bear"]


def test_two_species_of_one_genus_roll_up_to_the_genus(
    live: LiveServer, taxonomy: Taxonomy
) -> None:
    with live.client() as client:
        out = bears(client, classifier="sn-genus")
    ursus = taxonomy.by_key(URSUS)
    assert labels(out) == ["ursus species"] * 2
    assert [a["taxonomy"] for a in out["annotations"]] == [ursus.to_dict()] * 2
    assert ursus.to_dict()["species"] == "" and ursus.to_dict()["genus"] == "ursus"


def test_five_orders_roll_up_to_the_class(live: LiveServer, taxonomy: Taxonomy) -> None:
    # 5 x 0.14 = 0.70 >= 0.65 only at the class level
    with live.client() as client:
        out = bears(client, classifier="sn-class")
    assert labels(out) == ["mammal", "mammal"]
    assert out["annotations"][0]["taxonomy"] == taxonomy.by_key(MAMMALIA).to_dict()


def test_no_confident_level_falls_back_to_the_detector(live: LiveServer) -> None:
    # 5 x 0.12 = 0.60: no level reaches 0.65 (and `animal` is never the classifier's answer)
    with live.client() as client:
        out = bears(client, classifier="sn-spread")
        plain = bears(client, classifier="none")
    assert out["model_version"] == "yolox-nano+sn-spread-speciesnet-taxonomy"
    assert plain["model_version"] == "yolox-nano-speciesnet-taxonomy"
    assert by_detector_label(out) == by_detector_label(plain) == DETECTOR_LABELS
    assert {a["label"]: a["taxonomy"] for a in out["annotations"]} == {
        a["label"]: a["taxonomy"] for a in plain["annotations"]
    }


def test_the_geofence_rolls_up_past_a_blocked_taxon(live: LiveServer, taxonomy: Taxonomy) -> None:
    # The real fixes CSV blocks the bear family in GBR: the species, its genus and its family
    # may not be reported there, so the roll-up stops at the order. (The detector alone says
    # `carnivorous mammal` and `mammal` in GBR: the second label shows the classifier ran.)
    with live.client() as client:
        out = bears(client, classifier="sn-species", country="GBR")
        plain = bears(client, classifier="none", country="GBR")
    assert labels(out) == ["carnivorous mammal", "carnivorous mammal"]
    carnivora = taxonomy.by_key(CARNIVORA).to_dict()
    assert [a["taxonomy"] for a in out["annotations"]] == [carnivora, carnivora]
    assert by_detector_label(plain) == {"bear": "carnivorous mammal", "cow": "mammal"}
    assert out["geofence"]["applied"] is True


def test_the_first_installed_classifier_is_the_default(live: LiveServer) -> None:
    with live.client() as client:
        out = bears(client)
    assert out["model_version"] == "yolox-nano+sn-class-speciesnet-taxonomy"
    assert labels(out) == ["mammal", "mammal"]


def test_people_are_not_classified(live: LiveServer, taxonomy: Taxonomy) -> None:
    # The classifier says black bear for every crop; a person stays the detector's human.
    with live.client() as client:
        out = run(client, coco_image(ROOM), classifier="sn-species")
    humans = [a for a in out["annotations"] if a["category"] == "human"]
    assert humans
    for person in humans:
        assert person["label"] == "human"
        assert person["taxonomy"] == taxonomy.by_key(HUMAN).to_dict()
    assert out["model_version"] == "yolox-nano+sn-species-speciesnet-taxonomy"


def test_classify_false_runs_no_classifier(live: LiveServer) -> None:
    # No classifier means the detector's draft decode: the same four boxes as with none named.
    with live.client() as client:
        out = run(client, BEARS.read_bytes(), classify=False, classifier="sn-species")
        absent = run(client, BEARS.read_bytes(), classify=False, classifier="sn-absent")
        plain = run(client, BEARS.read_bytes(), classify=False)
    assert out["model_version"] == "yolox-nano"
    assert len(out["annotations"]) == 4
    assert labels(out) == ["animal"] * 4
    assert [a["taxonomy"] for a in out["annotations"]] == [None] * 4
    assert out == absent == plain


@pytest.mark.parametrize(
    ("classifier", "status", "code", "needle"),
    [
        ("sn-absent", 503, "model_unavailable", "sn-absent"),
        # No card has the name: retrying cannot help, so 422, not 503 (which invites retries).
        ("no-such-classifier", 422, "invalid_parameter", "no-such-classifier"),
        ("yolox-nano", 422, "invalid_parameter", "not a classify model"),
    ],
)
def test_a_classifier_that_cannot_run_is_refused(
    live: LiveServer, classifier: str, status: int, code: str, needle: str
) -> None:
    with live.client() as client:
        response = analyze(client, BEARS.read_bytes(), {"classifier": classifier})
    assert needle in error_of(response, status, code)


def test_the_models_listing_shows_classifiers(live: LiveServer) -> None:
    with live.client() as client:
        response = client.get("/v1/models")
    assert response.status_code == 200, response.text
    found = {m["name"]: m for m in response.json()["models"]}
    assert (found["sn-species"]["task"], found["sn-species"]["state"]) == ("classify", "installed")
    assert found["sn-species"]["classes"] == 2498  # the label list's lines
    assert found["sn-absent"]["state"] == "missing"
    assert found["yolox-nano"]["classes"] == 80


def test_a_classifier_asks_for_the_full_resolution_image(models: Path, tmp_path: Path) -> None:
    # The classifier crops the animal's own pixels; the detector alone is served by a draft.
    settings = make_settings(tmp_path, model_dirs=[models, MODELS])
    registry = ModelRegistry(settings)
    skill = AnimalsSkill(SkillContext(settings, registry, Engine(settings, registry)))

    def side(**params: Any) -> int | None:
        return skill.decode_side(skill.parse_params(params))

    assert side() is None
    assert side(classifier="sn-genus") is None
    assert side(classifier="none") == 416
    assert side(classify=False) == 416


# --- the roll-up of a classifier's top labels (pure) ----------------------------------------


def test_only_animal_taxa_finer_than_animal_count(taxonomy: Taxonomy) -> None:
    bear, human = taxonomy.by_key(BLACK_BEAR), taxonomy.by_key(HUMAN)
    assert classifier_taxon([(bear, 0.7), (human, 0.2)]) == bear
    # a person, a blank frame or a vehicle is no animal's label: the detector's taxon stays
    assert classifier_taxon([(human, 0.9), (bear, 0.05)]) is None
    assert classifier_taxon([(taxonomy.blank, 0.9), (bear, 0.05)]) is None
    assert classifier_taxon([(taxonomy.vehicle, 0.9)]) is None
    # a mammal and a bird together reach 0.65 only as `animal`, which the detector says anyway
    heron = taxonomy.by_common_name("great blue heron")
    assert classifier_taxon([(bear, 0.4), (heron, 0.3)]) is None
    assert classifier_taxon([(bear, 0.4), (taxonomy.by_key(MAMMALIA), 0.3)]) == taxonomy.by_key(
        MAMMALIA
    )


def test_a_geofence_predicate_skips_blocked_taxa(taxonomy: Taxonomy) -> None:
    bear = taxonomy.by_key(BLACK_BEAR)
    blocked = {BLACK_BEAR, URSUS, "mammalia;carnivora;ursidae;;"}
    allowed = lambda taxon: taxon.key not in blocked  # noqa: E731
    assert classifier_taxon([(bear, 0.9)], allowed) == taxonomy.by_key(CARNIVORA)


def test_detect_refuses_a_classifier_card_up_front(live: LiveServer) -> None:
    body = {
        "images": [{"data": base64.b64encode(BEARS.read_bytes()).decode()}],
        "tasks": [{"skill": "detect", "params": {"model": "sn-species"}}],
    }
    with live.client() as client:
        response = client.post("/v1/analyze", json=body)
    assert "not a detector" in error_of(response, 422, "invalid_parameter")
