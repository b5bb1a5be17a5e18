"""The `animals` skill: the real app over HTTP (`/v1/analyze`), the real yolox-nano, the real
SpeciesNet taxonomy and fixes CSV from ../shared/models; labelling checked on constructed cases."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from batchvision.core.settings import Settings
from batchvision.core.types import normalized_xywh
from batchvision.models.cards import ModelCard
from batchvision.models.registry import ModelRegistry
from batchvision.skills.animals import (
    ROLLUP_THRESHOLD,
    AnimalsParams,
    Box,
    annotation,
    classified,
    default_detector,
    detection_category,
    detector_mode,
    group_animals,
    group_taxon,
    label_taxa,
    permitted,
    taxon_label,
)
from batchvision.taxonomy import DetectorCategory, Geofence, SpeciesNetFiles, Taxon, Taxonomy
from conftest import EVALDATA, MODELS, LiveServer, coco_image, error_of, make_settings

ROOM = "000000000139.jpg"  # a living room with a person in it
TRAPS = EVALDATA / "camera_traps" / "images"
HERON = "md_heron_20241018012713_0.jpg"  # yolox-nano: one `bird`, ~0.83
BEAR = "ena24_9455.jpg"  # American black bears; yolox-nano calls them `bear` (and more)

URSIDAE = "mammalia;carnivora;ursidae;;"  # blocked in GBR by the real fixes CSV
SIKA_DEER = "mammalia;artiodactyla;cervidae;cervus;nippon"  # US: allowed in NJ and DE only
CARNIVORA = "mammalia;carnivora;;;"
DOG = "mammalia;carnivora;canidae;canis;familiaris"
CATTLE = "mammalia;artiodactyla;bovidae;bos;taurus"
IMPALA = "mammalia;artiodactyla;bovidae;aepyceros;melampus"
HUMAN = "mammalia;primates;hominidae;homo;sapiens"
BLACK_BEAR = "mammalia;carnivora;ursidae;ursus;americanus"  # blocked in GBR (as ursidae)


@pytest.fixture(scope="module")
def speciesnet() -> SpeciesNetFiles:
    return SpeciesNetFiles.find(MODELS / "speciesnet_data")


@pytest.fixture(scope="module")
def taxonomy(speciesnet: SpeciesNetFiles) -> Taxonomy:
    return speciesnet.taxonomy_index()


def analyze(
    client: httpx.Client, image: bytes, params: dict[str, Any] | None = None
) -> httpx.Response:
    body = {
        "images": [{"data": base64.b64encode(image).decode()}],
        "tasks": [{"skill": "animals", "params": params or {}}],
    }
    return client.post("/v1/analyze", json=body)


def output_of(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    assert result["status"] == "ok", result
    output: dict[str, Any] = result["outputs"]["animals"]
    return output


def run(client: httpx.Client, image: bytes, **params: Any) -> dict[str, Any]:
    return output_of(analyze(client, image, params))


def trap(name: str) -> bytes:
    path: Path = TRAPS / name
    return path.read_bytes()


# --- over HTTP --------------------------------------------------------------------------------


def test_people_are_human_with_the_human_taxon(live_server: LiveServer, taxonomy: Taxonomy) -> None:
    with live_server.client() as client:
        out = run(client, coco_image(ROOM))
    assert set(out) == {"model", "model_version", "mode", "annotations", "geofence"}
    assert out["model"] == "yolox-nano"
    assert out["model_version"] == "yolox-nano-speciesnet-taxonomy"
    assert out["mode"] == "coco-mapped"
    humans = [a for a in out["annotations"] if a["category"] == "human"]
    assert humans
    for person in humans:
        assert person["detector_label"] == "person"
        assert person["label"] == "human"
        assert person["taxonomy"] == taxonomy.by_key(HUMAN).to_dict()
        assert person["taxonomy"]["species"] == "sapiens"
    # the room's tv, chairs and clock are no camera-trap category
    assert {a["category"] for a in out["annotations"]} <= {"human", "animal", "vehicle"}
    assert out["geofence"] == {
        "country": None,
        "region": None,
        "applied": False,
        "has_base_rules": False,
        "note": None,
    }


def test_camera_trap_animal_gets_a_taxon(live_server: LiveServer) -> None:
    with live_server.client() as client:
        out = run(client, trap(HERON))
    animals = [a for a in out["annotations"] if a["category"] == "animal"]
    assert animals
    bird = max(animals, key=lambda a: a["score"])
    assert bird["detector_label"] == "bird"
    assert bird["label"] == "bird"
    assert set(bird["taxonomy"]) == {"id", "class", "order", "family", "genus", "species"}
    assert bird["taxonomy"]["class"] == "aves"
    assert bird["taxonomy"]["order"] == ""


def test_bbox_is_normalised_xywh_of_box(live_server: LiveServer) -> None:
    image = trap(BEAR)
    width, height = Image.open(io.BytesIO(image)).size
    with live_server.client() as client:
        out = run(client, image)
    assert out["annotations"]
    for ann in out["annotations"]:
        x1, y1, x2, y2 = ann["box"]
        x, y, w, h = ann["bbox"]
        assert x == pytest.approx(x1 / width, abs=2e-5)
        assert y == pytest.approx(y1 / height, abs=2e-5)
        assert w == pytest.approx((x2 - x1) / width, abs=2e-5)
        assert h == pytest.approx((y2 - y1) / height, abs=2e-5)
        assert all(0.0 <= v <= 1.0 for v in ann["bbox"])
        assert 0 < x2 <= width and 0 < y2 <= height
        assert ann["score"] == round(ann["score"], 4)


def test_classify_false_gives_coarse_labels(live_server: LiveServer) -> None:
    with live_server.client() as client:
        out = run(client, trap(BEAR), classify=False, country="GBR")
        room = run(client, coco_image(ROOM), classify=False)
    assert out["model_version"] == "yolox-nano"
    annotations = out["annotations"] + room["annotations"]
    assert {a["category"] for a in annotations} >= {"animal", "human"}
    for ann in annotations:
        assert ann["label"] == ann["category"]
        assert ann["taxonomy"] is None
    assert out["geofence"]["applied"] is False
    assert "classify=false" in out["geofence"]["note"]


@pytest.mark.parametrize(
    ("threshold", "status"), [(0.009, 422), (1.0, 422), (0.01, 200), (0.99, 200)]
)
def test_threshold_bounds(live_server: LiveServer, threshold: float, status: int) -> None:
    with live_server.client() as client:
        response = analyze(client, trap(HERON), {"threshold": threshold})
    assert response.status_code == status, response.text
    if status == 200:
        assert all(a["score"] >= threshold for a in output_of(response)["annotations"])


def test_threshold_filters(live_server: LiveServer) -> None:
    with live_server.client() as client:
        low = run(client, trap(BEAR), threshold=0.01)
        high = run(client, trap(BEAR), threshold=0.5)
    assert len(low["annotations"]) > len(high["annotations"]) > 0


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"latitude": 51.5, "country": "GBR"}, "together"),
        ({"longitude": -0.1, "country": "GBR"}, "together"),
        ({"latitude": 51.5, "longitude": -0.1}, "send country"),
        ({"country": "Narnia"}, "unknown country"),
        ({"country": "GBR", "latitude": 91.0, "longitude": 0.0}, "latitude"),
        ({"country": "GBR", "latitude": 0.0, "longitude": -180.5}, "longitude"),
        ({"profile": "zoo"}, "profile"),
        ({"threshold": "0.5"}, "threshold"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_params_are_422(
    live_server: LiveServer, params: dict[str, Any], needle: str
) -> None:
    with live_server.client() as client:
        message = error_of(analyze(client, trap(HERON), params), 422, "invalid_parameter")
    assert needle in message


@pytest.mark.parametrize("country", ["US", "USA", "United States", "usa"])
def test_country_is_normalised_to_cca3(live_server: LiveServer, country: str) -> None:
    with live_server.client() as client:
        out = run(client, trap(HERON), country=country, latitude=40.0, longitude=-74.0)
    geofence = out["geofence"]
    assert geofence["country"] == "USA"
    assert geofence["applied"] is True
    assert geofence["has_base_rules"] is False
    assert "geofence_fixes.csv" in geofence["note"]
    # 40.0 N, 74.0 W is on the New Jersey shore: the region decides the sika-deer-style rules.
    assert geofence["region"] == "NJ"
    assert "region NJ" in geofence["note"]


def test_a_point_far_from_any_town_stays_country_wide(live_server: LiveServer) -> None:
    with live_server.client() as client:
        out = run(client, trap(HERON), country="USA", latitude=30.0, longitude=-140.0)
    assert out["geofence"]["region"] is None
    assert "country-wide" in out["geofence"]["note"]


def test_geofence_rolls_a_bear_up_in_britain(live_server: LiveServer) -> None:
    # The fixes CSV blocks the bear family (ursidae) in GBR; COCO `bear` maps to that family.
    with live_server.client() as client:
        free = run(client, trap(BEAR))
        fenced = run(client, trap(BEAR), country="GB")
    free_bears = [a for a in free["annotations"] if a["detector_label"] == "bear"]
    fenced_bears = [a for a in fenced["annotations"] if a["detector_label"] == "bear"]
    assert free_bears and len(free_bears) == len(fenced_bears)
    for bear in free_bears:
        assert bear["taxonomy"]["family"] == "ursidae"
    for bear in fenced_bears:
        assert bear["taxonomy"]["order"] == "carnivora"
        assert bear["taxonomy"]["family"] == ""
        assert bear["label"] == "carnivorous mammal"
    # another bear, seen as `cow` + `elephant`, rolls up to `mammal`, which GBR allows
    [rolled] = [a for a in fenced["annotations"] if a["detector_label"] == "cow"]
    assert rolled["label"] == "mammal"


# Real camera-trap images where yolox-nano reports one animal as overlapping boxes of different
# classes (scores as the server decodes them, at the default threshold), the truth from
# labels.json, and the labels after roll-up: no wrong family any more, only the truth or its
# ancestors.
ROLLUPS = [
    # bear 0.53 alone -> bear family; cow 0.52 + elephant 0.40 + bear 0.24 on a second bear
    # -> mammal
    (BEAR, "american black bear", {"bear family", "mammal"}),
    # horse 0.47 + cow 0.20 -> mammal 0.67
    ("speciesnet_domestic_dog.jpg", "domestic dog", {"mammal"}),
    # two cattle as bear/elephant(/cow) stacks -> mammal; a third as a lone cow 0.27 keeps it
    ("speciesnet_domestic_cattle.jpg", "domestic cattle", {"mammal", "domestic cattle"}),
    # bear 0.35 + dog 0.27 = 0.62: carnivora falls short of the threshold (and would be wrong)
    ("ena24_422.jpg", "eastern fox squirrel", {"animal"}),
]


@pytest.mark.parametrize(("image", "truth", "labels"), ROLLUPS)
def test_competing_classes_roll_up_to_an_ancestor_of_the_truth(
    live_server: LiveServer, taxonomy: Taxonomy, image: str, truth: str, labels: set[str]
) -> None:
    with live_server.client() as client:
        out = run(client, trap(image))
        boxes = run(client, trap(image), classify=False)["annotations"]
    animal = taxonomy.by_common_name(truth)
    annotations = out["annotations"]
    assert {a["label"] for a in annotations} == labels
    for ann in annotations:
        taxon = taxonomy.by_id(ann["taxonomy"]["id"])
        assert taxon == animal or animal.descends_from(taxon), ann
    # classify=false keeps every box; each annotation is one of them, with its own score
    assert len(boxes) > len(annotations)
    kept = {(tuple(b["box"]), b["score"], b["detector_label"]) for b in boxes}
    assert {(tuple(a["box"]), a["score"], a["detector_label"]) for a in annotations} <= kept


def test_missing_speciesnet_data_is_model_unavailable(
    serve: Callable[..., LiveServer], tmp_path: Path
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "yolox_nano").symlink_to(MODELS / "yolox_nano")
    live = serve(model_dirs=[models])
    with live.client() as client:
        refused = analyze(client, trap(HERON))
        coarse = analyze(client, trap(HERON), {"classify": False})
    message = error_of(refused, 503, "model_unavailable")
    assert "taxonomy_release.txt" in message
    assert str(models / "speciesnet_data") in message
    assert output_of(coarse)["annotations"][0]["label"] == "animal"


# --- the labelling functions ------------------------------------------------------------------


def test_fixes_csv_veto_rolls_up_to_the_parent(
    taxonomy: Taxonomy, speciesnet: SpeciesNetFiles
) -> None:
    geofence = speciesnet.geofence()
    bear = taxonomy.by_key(URSIDAE)
    [in_gbr] = label_taxa([bear], [0.9], geofence=geofence, country="GBR")
    [in_usa] = label_taxa([bear], [0.9], geofence=geofence, country="USA")
    [nowhere] = label_taxa([bear], [0.9], geofence=geofence)
    assert in_gbr == taxonomy.by_key(CARNIVORA)
    assert in_usa == bear
    assert nowhere == bear


def test_state_level_rules_follow_the_region(
    taxonomy: Taxonomy, speciesnet: SpeciesNetFiles
) -> None:
    # The real fixes CSV blocks sika deer in every US state but New Jersey and Delaware.
    geofence = speciesnet.geofence()
    sika = taxonomy.by_key(SIKA_DEER)
    [in_nj] = label_taxa([sika], [0.9], geofence=geofence, country="USA", state="NJ")
    [in_ca] = label_taxa([sika], [0.9], geofence=geofence, country="USA", state="CA")
    assert in_nj == sika
    assert in_ca != sika and sika.descends_from(in_ca)


def test_urban_profile_exempts_domestic_taxa(taxonomy: Taxonomy) -> None:
    blocked: dict[str, dict[str, list[str]]] = {"block": {"GBR": []}}
    geofence = Geofence(
        {DOG: blocked, URSIDAE: blocked, HUMAN: blocked},
        has_base_rules=True,
    )
    dog, bear, human = taxonomy.by_key(DOG), taxonomy.by_key(URSIDAE), taxonomy.by_key(HUMAN)
    taxa = [dog, bear, human]
    wild = label_taxa(taxa, [0.9] * 3, geofence=geofence, country="GBR", profile="wild")
    urban = label_taxa(taxa, [0.9] * 3, geofence=geofence, country="GBR", profile="urban")
    assert wild[0] != dog and dog.descends_from(wild[0])
    assert wild[2] != human
    assert urban[0] == dog
    assert urban[2] == human
    # a wild animal is vetoed under either profile
    assert wild[1] == urban[1] == taxonomy.by_key(CARNIVORA)


def test_smooth_herd_gives_imprecise_labels_the_herd_label(
    taxonomy: Taxonomy, speciesnet: SpeciesNetFiles
) -> None:
    impala = taxonomy.by_key(IMPALA)
    mammal = taxonomy.by_key("mammalia;;;;")
    bird = taxonomy.by_key("aves;;;;")
    human = taxonomy.by_key(HUMAN)
    taxa = [impala, mammal, taxonomy.animal, impala, bird, human]
    scores = [0.9, 0.5, 0.4, 0.8, 0.6, 0.9]
    geofence = speciesnet.geofence()
    smoothed = label_taxa(taxa, scores, geofence=geofence, smooth=True)
    assert smoothed == [impala, impala, impala, impala, bird, human]
    assert label_taxa(taxa, scores, geofence=geofence, smooth=False) == taxa


def animal(label: str, score: float, xyxy: tuple[float, float, float, float]) -> Box:
    return Box(DetectorCategory.ANIMAL, label, score, xyxy)


def test_group_animals_merges_overlapping_animals_of_any_class() -> None:
    bear = animal("bear", 0.4, (100.0, 100.0, 200.0, 200.0))
    cow = animal("cow", 0.3, (102.0, 98.0, 204.0, 200.0))  # the same animal
    dog = animal("dog", 0.5, (300.0, 100.0, 400.0, 200.0))  # another one
    rider = Box(DetectorCategory.HUMAN, "person", 0.6, (100.0, 100.0, 200.0, 200.0))
    beside = animal("sheep", 0.35, (150.0, 100.0, 250.0, 200.0))  # IoU 1/3 with the bear
    groups = group_animals([bear, cow, dog, rider, beside])
    assert groups == [[rider], [dog], [bear, cow], [beside]]
    assert group_animals([]) == []


def test_group_taxon_rolls_up_competing_taxa(taxonomy: Taxonomy) -> None:
    bear, cattle = taxonomy.by_key(URSIDAE), taxonomy.by_key(CATTLE)
    dog = taxonomy.by_key(DOG)

    def label(taxa: list[Taxon], scores: list[float]) -> str:
        return taxon_label(group_taxon(taxa, scores, taxonomy))

    assert ROLLUP_THRESHOLD == 0.65
    assert label([bear, cattle], [0.4, 0.3]) == "mammal"  # mammalia 0.7
    assert label([bear, dog], [0.4, 0.3]) == "carnivorous mammal"  # carnivora 0.7
    assert label([bear, dog], [0.4, 0.25]) == "carnivorous mammal"  # exactly the threshold
    assert label([bear, dog], [0.36, 0.28]) == "animal"  # 0.64: no level is confident
    # one taxon is kept whatever its score: the detection threshold already passed it
    assert label([cattle], [0.21]) == "domestic cattle"
    assert label([cattle, cattle], [0.3, 0.21]) == "domestic cattle"


def test_roll_up_chooses_among_taxa_the_geofence_allows(
    taxonomy: Taxonomy, speciesnet: SpeciesNetFiles
) -> None:
    # SpeciesNet drops a blocked candidate at its level and takes the best allowed one.
    black_bear, dog = taxonomy.by_key(BLACK_BEAR), taxonomy.by_key(DOG)
    geofence = speciesnet.geofence()
    scores = [0.7, 0.66]
    free = group_taxon([black_bear, dog], scores, taxonomy, permitted(geofence, None))
    in_gbr = group_taxon([black_bear, dog], scores, taxonomy, permitted(geofence, "GBR"))
    assert free == black_bear
    assert in_gbr == dog
    blocked: dict[str, dict[str, list[str]]] = {"block": {"GBR": []}}
    no_dogs = Geofence({DOG: blocked}, has_base_rules=True)
    wild, urban = permitted(no_dogs, "GBR", "wild"), permitted(no_dogs, "GBR", "urban")
    assert wild is not None and urban is not None
    assert not wild(dog)
    assert urban(dog)  # the urban profile never fences a domestic taxon


def test_classified_gives_one_annotation_per_animal(
    taxonomy: Taxonomy, speciesnet: SpeciesNetFiles
) -> None:
    cow = animal("cow", 0.57, (551.0, 432.0, 726.0, 561.0))
    elephant = animal("elephant", 0.41, (555.0, 432.0, 726.0, 562.0))
    bear = animal("bear", 0.54, (467.0, 561.0, 628.0, 732.0))
    person = Box(DetectorCategory.HUMAN, "person", 0.8, (550.0, 430.0, 720.0, 560.0))
    params = AnimalsParams.model_validate({"country": "GBR"})
    labelled = classified(
        [bear, elephant, person, cow], "coco-mapped", taxonomy, speciesnet.geofence(), params
    )
    # the best box of each group, with its own score; the bear family is fenced in GBR
    assert [(box, taxon_label(taxon)) for box, taxon in labelled] == [
        (person, "human"),
        (cow, "mammal"),
        (bear, "carnivorous mammal"),
    ]
    smooth = params.model_copy(update={"smooth_herd": True, "country": None})
    herd = classified([bear, cow, elephant], "coco-mapped", taxonomy, speciesnet.geofence(), smooth)
    # `mammal` is imprecise and inherits the herd's bear family
    assert [taxon_label(taxon) for _, taxon in herd] == ["bear family", "bear family"]


def test_annotation_keeps_pixels_and_megadetector_bbox_is_derived(taxonomy: Taxonomy) -> None:
    cattle = taxonomy.by_key(CATTLE)
    box = Box(DetectorCategory.ANIMAL, "cow", 0.123456, (100.0, 50.0, 300.0, 250.0))
    ann = annotation(box, cattle)
    assert "bbox" not in ann  # skills keep pixels; surfaces convert
    assert ann["box"] == [100.0, 50.0, 300.0, 250.0]
    assert normalized_xywh(ann["box"], 400, 500) == [0.25, 0.1, 0.5, 0.4]
    assert normalized_xywh([-20.0, 50.0, 450.0, 600.0], 400, 500) == [0.0, 0.1, 1.0, 0.9]
    assert ann["score"] == 0.1235
    assert ann["label"] == "domestic cattle"
    assert ann["taxonomy"] == cattle.to_dict()
    coarse = annotation(box, None)
    assert coarse["label"] == "animal" and coarse["taxonomy"] is None


def test_label_falls_back_to_the_most_precise_rank(taxonomy: Taxonomy) -> None:
    nameless = next(t for t in taxonomy if t.is_taxonomic and not t.common_name)
    assert taxon_label(nameless) == next(r for r in reversed(nameless.ranks) if r)
    assert taxon_label(taxonomy.by_key(CATTLE)) == "domestic cattle"


def test_default_detector_prefers_an_installed_megadetector_card(tmp_path: Path) -> None:
    (tmp_path / "md").mkdir()
    (tmp_path / "md" / "md.onnx").write_bytes(b"not read here")

    def card(name: str, labels: list[str], file: str) -> ModelCard:
        return ModelCard(
            name=name, task="detect", family="yolov5", file=file,
            input_size=(640, 640), labels=labels,
        )  # fmt: skip

    missing = card("md-missing", ["animal", "person", "vehicle"], "nowhere/md.onnx")
    megadetector = card("md-user", ["Vehicle", "animal", "person"], "md/md.onnx")
    other = card("three", ["animal", "person", "car"], "md/md.onnx")
    settings: Settings = make_settings(tmp_path, model_dirs=[tmp_path])
    cards = {c.name: c for c in (missing, other, megadetector)}
    assert default_detector(ModelRegistry(settings, cards)) == "md-user"
    del cards["md-user"]
    assert default_detector(ModelRegistry(settings, cards)) == "yolox-nano"
    assert detector_mode(megadetector) == "megadetector"
    assert detector_mode(other) == "coco-mapped"
    assert detection_category("megadetector", "person") is DetectorCategory.HUMAN
    assert detection_category("coco-mapped", "truck") is DetectorCategory.VEHICLE
    assert detection_category("coco-mapped", "chair") is None


def test_params_defaults_and_normalised_country() -> None:
    params = AnimalsParams.model_validate({"country": "Kenya"})
    assert params.country == "KEN"
    assert params.threshold == 0.2
    assert params.classify is True
    assert params.profile == "wild"
    assert params.smooth_herd is False
