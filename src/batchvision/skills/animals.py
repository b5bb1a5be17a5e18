"""`animals`: camera-trap detection as MegaDetector categories with SpeciesNet taxonomy labels.

The detector is any detect card. A card whose classes are exactly MegaDetector's (animal, person,
vehicle) is used as is; any other is read as a COCO detector whose classes are mapped to those
categories (`coco_category`). With `classify=true` each box also gets the most precise SpeciesNet
taxon the models at hand support, vetoed by the geofence for the country and smoothed across a
herd:

- with a classify card installed (SpeciesNet's always_crop classifier), each animal's box is
  cropped from the full-resolution image and classified; its top 5 labels are rolled up SpeciesNet's
  way (the finest level whose summed score reaches 0.65, geofence-vetoed taxa left out);
- when no level is confident, or no classifier is installed, the label is the detector's class
  mapped to its taxon, so labels never claim more than some model said.

A COCO detector often reports one animal as overlapping boxes of different classes (a black bear
as `cow` 0.57 and `elephant` 0.41). With `classify=true` such boxes are one annotation whose label
is SpeciesNet's roll-up of their summed scores (`mammal` here), not two confident wrong species.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from batchvision.core.errors import BatchVisionError, ErrorCode, echo
from batchvision.core.settings import Settings
from batchvision.core.types import DecodedImage
from batchvision.models.cards import ModelCard
from batchvision.models.classifier import Crop, top_k
from batchvision.models.decoders import DecodeParams, Detections
from batchvision.models.detector import DetectRequest
from batchvision.models.preprocess import FloatArray
from batchvision.models.registry import ModelRegistry
from batchvision.skills.base import Skill, SkillOutput
from batchvision.skills.detect import DEFAULT_DETECT_MODEL
from batchvision.taxonomy import (
    DetectorCategory,
    Geofence,
    SpeciesNetFiles,
    Taxon,
    Taxonomy,
    UnknownCountryError,
    category_taxon,
    coco_category,
    coco_taxon,
    load_taxonomy,
    normalize_country,
    roll_up,
    smooth_herd,
)
from batchvision.taxonomy.geocode import (
    MAX_TOWN_DISTANCE_KM,
    REGION_COUNTRIES,
    Place,
    nearest_region,
)
from batchvision.taxonomy.rollup import ROLLUP_LEVELS
from batchvision.taxonomy.tree import Level, ancestor_keys

Mode = Literal["megadetector", "coco-mapped"]
Profile = Literal["wild", "urban"]

SPECIESNET_DIR = "speciesnet_data"
TAXONOMY_SUFFIX = "-speciesnet-taxonomy"

# A MegaDetector export names its classes this way; `person` is reported as `human`.
MEGADETECTOR_CLASSES: dict[str, DetectorCategory] = {
    "animal": DetectorCategory.ANIMAL,
    "person": DetectorCategory.HUMAN,
    "vehicle": DetectorCategory.VEHICLE,
}

# Taxa an urban, farm or zoo camera expects anywhere: the geofence never vetoes them (nor their
# subspecies) under the urban profile. People are exempt through `Taxon.is_human`.
DOMESTIC_KEYS: frozenset[str] = frozenset(
    {
        "mammalia;artiodactyla;bovidae;bos;taurus",  # domestic cattle
        "mammalia;carnivora;canidae;canis;familiaris",  # domestic dog
        "mammalia;carnivora;felidae;felis;catus",  # domestic cat
        "mammalia;perissodactyla;equidae;equus;caballus",  # domestic horse
        "mammalia;artiodactyla;bovidae;ovis;aries",  # domestic sheep
        "mammalia;artiodactyla;suidae;sus;scrofa scrofa",  # domestic pig
        "mammalia;artiodactyla;bovidae;capra;aegagrus hircus",  # domestic goat
        "aves;galliformes;phasianidae;gallus;gallus domesticus",  # domestic chicken
    }
)

# Detection settings the surface does not expose; the same as `detect`'s defaults.
_NMS_IOU = 0.45
_MAX_DETECTIONS = 100

# Animal boxes overlapping at least this much are one animal seen as several classes. 0.5 is the
# usual "same object" match (COCO, VOC); the class heads' boxes for one animal overlap far more
# (0.89 to 0.98 on the camera-trap set), and two animals of a herd rarely overlap this much.
GROUP_IOU = 0.5

# SpeciesNet's ensemble rolls up at 0.65. Kept as is: detector scores (objectness x class) run
# lower than a classifier's softmax, so this only keeps a precise label when the competing classes
# together carry real weight; a squirrel seen as `bear` 0.35 + `dog` 0.27 stays `animal` instead
# of becoming a carnivore.
ROLLUP_THRESHOLD = 0.65

# `classifier=none` turns a classifier off; SpeciesNet's ensemble rolls up its top 5 labels.
NO_CLASSIFIER = "none"
CLASSIFIER_TOP_K = 5
# Kingdom (`animal`) is left out: it is never finer than the detector's own taxon, which then
# serves as the fallback instead.
CLASSIFIER_LEVELS: tuple[Level, ...] = tuple(lv for lv in ROLLUP_LEVELS if lv >= Level.CLASS)

# A classifier's top labels for one animal: (taxon, score), best first.
Scores = Sequence[tuple[Taxon, float]]


class AnimalsParams(BaseModel):
    # Strict like DetectParams: a string threshold or a numeric country is a client mistake.
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = Field(
        None, description="a detect card; default: an installed MegaDetector card, else yolox-nano"
    )
    threshold: float = Field(0.2, ge=0.01, le=0.99, description="minimum detection score")
    classify: bool = Field(
        True, description="SpeciesNet taxonomy labels; false: animal/human/vehicle"
    )
    classifier: str | None = Field(
        None,
        description="a classify card for the labels (with classify=true); default: the first "
        "installed one; 'none': the detector's classes only",
    )
    country: str | None = Field(None, description="geofencing hint: CCA2, CCA3 or English name")
    latitude: float | None = Field(None, ge=-90.0, le=90.0)
    longitude: float | None = Field(None, ge=-180.0, le=180.0)
    smooth_herd: bool = Field(False, description="imprecise labels inherit the herd's label")
    profile: Profile = Field("wild", description="urban: domestic taxa are never geofenced")

    @field_validator("country")
    @classmethod
    def _cca3(cls, value: str | None) -> str | None:
        # Normalised once here, so every later step sees the CCA3 code the rules are keyed by.
        if value is None:
            return None
        try:
            return normalize_country(value)
        except UnknownCountryError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _area_hint(self) -> AnimalsParams:
        if (self.latitude is None) != (self.longitude is None):
            raise ValueError("latitude and longitude must be sent together")
        if self.latitude is not None and self.country is None:
            raise ValueError("latitude and longitude are only used with country; send country")
        return self


# --- the detector ---------------------------------------------------------------------------


def is_megadetector(card: ModelCard) -> bool:
    """A card whose classes are exactly MegaDetector's three, in any order and case."""
    names = [name.strip().lower() for name in card.class_names()]
    return len(names) == len(MEGADETECTOR_CLASSES) and set(names) == set(MEGADETECTOR_CLASSES)


def detector_mode(card: ModelCard) -> Mode:
    return "megadetector" if is_megadetector(card) else "coco-mapped"


def detection_category(mode: Mode, class_name: str) -> DetectorCategory | None:
    """The camera-trap category of one detector class; None for classes camera traps ignore."""
    if mode == "megadetector":
        return MEGADETECTOR_CLASSES.get(class_name.strip().lower())
    return coco_category(class_name)


def category_ids(card: ModelCard) -> frozenset[int]:
    """The class ids that map to a category: filtering before NMS and the detection cap keeps
    a chair from crowding out a deer."""
    mode = detector_mode(card)
    names = card.class_names()
    return frozenset(i for i, name in enumerate(names) if detection_category(mode, name))


def default_detector(registry: ModelRegistry) -> str:
    """The first installed MegaDetector-style card (a user's export), else the COCO default."""
    for card in registry.cards.values():
        # Checked in this order so the checksum (status) is only read for candidate cards.
        if card.task != "detect" or not is_megadetector(card):
            continue
        if registry.status(card).state == "installed":
            return card.name
    return DEFAULT_DETECT_MODEL


def default_classifier(registry: ModelRegistry) -> str | None:
    """The first installed classify card; None when there is none."""
    for card in registry.cards.values():
        if card.task == "classify" and registry.status(card).state == "installed":
            return card.name
    return None


def classifier_card(registry: ModelRegistry, params: AnimalsParams) -> ModelCard | None:
    """The classify card this request runs, if any. A name no card has is `invalid_parameter`
    (422): retrying cannot help, unlike `model_unavailable` (503), which stays for a card whose
    files are not installed (the registry says so when the model loads)."""
    if not params.classify or params.classifier == NO_CLASSIFIER:
        return None
    name = params.classifier or default_classifier(registry)
    if name is None:
        return None
    card = registry.cards.get(name)
    if card is None:
        raise BatchVisionError(
            ErrorCode.INVALID_PARAMETER,
            f"animals: no classifier '{echo(name)}' is known; add its card (*.card.toml with "
            f'task = "classify"), model file and label list to a model directory',
        )
    if card.task != "classify":
        raise BatchVisionError(
            ErrorCode.INVALID_PARAMETER, f"animals: model '{name}' is not a classify model"
        )
    return card


# --- SpeciesNet data -------------------------------------------------------------------------


def find_speciesnet(model_dirs: Sequence[Path]) -> SpeciesNetFiles | None:
    """The SpeciesNet files of the first model directory holding `speciesnet_data/`."""
    for model_dir in model_dirs:
        try:
            return SpeciesNetFiles.find(model_dir / SPECIESNET_DIR)
        except FileNotFoundError:
            continue
    return None


def require_speciesnet(settings: Settings) -> SpeciesNetFiles:
    files = find_speciesnet(settings.model_dirs)
    if files is None:
        where = ", ".join(str(d / SPECIESNET_DIR) for d in settings.model_dirs)
        raise BatchVisionError(
            ErrorCode.MODEL_UNAVAILABLE,
            f"animals: the SpeciesNet taxonomy (taxonomy_release.txt) is not installed in "
            f"{where}; install SpeciesNet's data files there or send classify=false",
        )
    return files


# --- labelling (pure: the routes, the folder writer and tests call these) -------------------


def detector_taxon(
    mode: Mode, category: DetectorCategory, class_name: str, taxonomy: Taxonomy
) -> Taxon:
    """The most precise taxon the detector's class supports (no classifier is at hand)."""
    if mode == "coco-mapped":
        taxon = coco_taxon(class_name, taxonomy)
        if taxon is not None:
            return taxon
    return category_taxon(category, taxonomy)


def is_domestic(taxon: Taxon) -> bool:
    return taxon.is_human or any(key in DOMESTIC_KEYS for key in ancestor_keys(taxon.key))


def fenced(
    taxon: Taxon,
    geofence: Geofence,
    country: str | None,
    profile: Profile = "wild",
    state: str | None = None,
) -> Taxon:
    """`taxon`, or its nearest ancestor allowed in `country` (and `state`, when known)."""
    if country is None or (profile == "urban" and is_domestic(taxon)):
        return taxon
    return geofence.geofenced(taxon, country, state)


def label_taxa(
    taxa: Sequence[Taxon],
    scores: Sequence[float],
    *,
    geofence: Geofence,
    country: str | None = None,
    profile: Profile = "wild",
    smooth: bool = False,
    state: str | None = None,
) -> list[Taxon]:
    """One image's final taxa: geofenced first, so a herd only ever inherits an allowed label."""
    result = [fenced(taxon, geofence, country, profile, state) for taxon in taxa]
    return smooth_herd(result, scores) if smooth else result


def taxon_label(taxon: Taxon) -> str:
    """The common name; without one, the taxon's most precise scientific rank."""
    if taxon.common_name:
        return taxon.common_name
    return next((rank for rank in reversed(taxon.ranks) if rank), "animal")


def geofence_info(
    geofence: Geofence | None,
    country: str | None,
    *,
    classify: bool,
    area_hint: bool,
    place: Place | None = None,
) -> dict[str, Any]:
    """What the response says about geofencing: whether it ran and what it could not do."""
    notes: list[str] = []
    applied = False
    has_base = geofence is not None and geofence.has_base_rules
    if country is not None and not classify:
        notes.append("classify=false: detector-only labels are not geofenced")
    elif country is not None and geofence is not None:
        applied = len(geofence) > 0
        if not applied:
            notes.append("no SpeciesNet geofence data is installed: labels are not geofenced")
        elif not has_base:
            notes.append(
                "only SpeciesNet's geofence_fixes.csv is installed (no geofence_release.json): "
                "its block rules apply, the full range rules do not"
            )
    if place is not None:
        notes.append(
            f"latitude/longitude placed in region {place.region} (nearest town of 15,000+: "
            f"{place.town}, {place.distance_km:g} km): region rules apply"
        )
    elif area_hint and country in REGION_COUNTRIES:
        notes.append(
            f"latitude/longitude are over {MAX_TOWN_DISTANCE_KM:g} km from any town in "
            f"{country}: rules apply country-wide"
        )
    return {
        "country": country,
        "region": place.region if place is not None else None,
        "applied": applied,
        "has_base_rules": has_base,
        "note": "; ".join(notes) or None,
    }


@dataclass(frozen=True, slots=True)
class Box:
    """One kept detection in pixels (xyxy, inside the image) with its category."""

    category: DetectorCategory
    detector_label: str
    score: float
    xyxy: tuple[float, float, float, float]


def boxes_of(dets: Detections, card: ModelCard, image: DecodedImage) -> list[Box]:
    mode = detector_mode(card)
    names = card.class_names()
    boxes = []
    for xyxy, score, class_id in zip(dets.boxes, dets.scores, dets.class_ids, strict=True):
        name = names[int(class_id)]
        category = detection_category(mode, name)
        if category is None:
            continue
        x1, y1, x2, y2 = (float(v) for v in xyxy)
        # Clipped here as well as in the decoder: a box never leaves the image.
        x1, x2 = (min(max(v, 0.0), float(image.width)) for v in (x1, x2))
        y1, y2 = (min(max(v, 0.0), float(image.height)) for v in (y1, y2))
        boxes.append(Box(category, name, float(score), (x1, y1, x2, y2)))
    return boxes


def iou(a: Box, b: Box) -> float:
    ax1, ay1, ax2, ay2 = a.xyxy
    bx1, by1, bx2, by2 = b.xyxy
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def group_animals(boxes: Sequence[Box], min_iou: float = GROUP_IOU) -> list[list[Box]]:
    """One group per animal, best box first, groups best first: greedily, like NMS, each
    ungrouped box takes the ungrouped boxes that are `same_animal` as it."""
    pending = sorted(boxes, key=lambda box: -box.score)
    groups: list[list[Box]] = []
    while pending:
        seed, *rest = pending
        group, pending = [seed], []
        for box in rest:
            (group if same_animal(seed, box, min_iou) else pending).append(box)
        groups.append(group)
    return groups


def same_animal(a: Box, b: Box, min_iou: float = GROUP_IOU) -> bool:
    """Two animal boxes overlapping by `min_iou`, whatever their classes. People and vehicles
    are never merged: a rider is not part of the horse."""
    animal = DetectorCategory.ANIMAL
    return a.category is animal and b.category is animal and iou(a, b) >= min_iou


def group_taxon(
    taxa: Sequence[Taxon],
    scores: Sequence[float],
    taxonomy: Taxonomy,
    allowed: Callable[[Taxon], bool] | None = None,
) -> Taxon:
    """The label of one animal seen as `taxa` (one per box, with its score).

    A single taxon is kept whatever its score: the score already passed the request's detection
    threshold, and a lone faint box is uncertain about being there at all, not about its class,
    so rolling it up would only blur a label the detector never contradicted. Competing taxa are
    rolled up SpeciesNet's way; when no level reaches `ROLLUP_THRESHOLD` the animal is `animal`,
    SpeciesNet's own fallback.
    """
    if len(set(taxa)) == 1:
        return taxa[0]
    rolled = roll_up(zip(taxa, scores, strict=True), ROLLUP_THRESHOLD, allowed=allowed)
    return rolled.taxon if rolled is not None else taxonomy.animal


def classifier_taxon(
    scores: Scores, allowed: Callable[[Taxon], bool] | None = None
) -> Taxon | None:
    """The classifier's label for one animal: its top labels rolled up SpeciesNet's way, or None
    when no level (class or finer) reaches `ROLLUP_THRESHOLD`.

    `blank`, `vehicle`, `animal` and people add nothing: the detector already said this box is an
    animal, and a person is the detector's `human` category, never an animal's label.
    """
    animals = [(taxon, score) for taxon, score in scores if taxon.is_taxonomic]
    animals = [(taxon, score) for taxon, score in animals if not taxon.is_human]
    rolled = roll_up(animals, ROLLUP_THRESHOLD, levels=CLASSIFIER_LEVELS, allowed=allowed)
    return rolled.taxon if rolled is not None else None


def top_labels(row: FloatArray, taxonomy: Taxonomy) -> list[tuple[Taxon, float]]:
    """A classifier's score row as its top (taxon, score) pairs; `taxonomy.labels` is the
    classifier's output order."""
    return [(taxonomy.labels[i], score) for i, score in top_k(row, CLASSIFIER_TOP_K)]


def permitted(
    geofence: Geofence, country: str | None, profile: Profile = "wild", state: str | None = None
) -> Callable[[Taxon], bool] | None:
    """`fenced`'s rule as a predicate for `roll_up(allowed=...)`; None when nothing is fenced."""
    if country is None:
        return None
    allows = geofence.allows(country, state)
    if profile == "urban":
        return lambda taxon: is_domestic(taxon) or allows(taxon)
    return allows


class Annotation(TypedDict):
    category: str  # animal, person or vehicle
    label: str
    score: float
    box: list[float]  # x1, y1, x2, y2 in pixels of the original image
    taxonomy: dict[str, Any] | None
    detector_label: str


class AnimalsOutput(TypedDict):
    model: str
    model_version: str
    mode: str
    annotations: list[Annotation]
    geofence: dict[str, Any]


def annotation(box: Box, taxon: Taxon | None) -> Annotation:
    """One annotation, its box in pixels (surfaces convert: MegaDetector's normalised
    [x, y, w, h] is `core.types.normalized_xywh`)."""
    x1, y1, x2, y2 = box.xyxy
    return {
        "category": box.category.value,
        "label": taxon_label(taxon) if taxon is not None else box.category.value,
        "score": round(box.score, 4),
        "box": [round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2)],
        "taxonomy": taxon.to_dict() if taxon is not None else None,
        "detector_label": box.detector_label,
    }


# --- the skill -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one request needs per image, worked out once."""

    card: ModelCard
    mode: Mode
    decode: DecodeParams
    params: AnimalsParams
    taxonomy: Taxonomy | None
    geofence: Geofence | None
    header: dict[str, str]  # model, model_version, mode
    classifier: ModelCard | None
    place: Place | None  # where latitude/longitude fall, for region-level geofence rules

    @property
    def state(self) -> str | None:
        return self.place.region if self.place is not None else None


class AnimalsSkill(Skill):
    name = "animals"
    description = (
        "Camera-trap detection: animal / human / vehicle boxes with SpeciesNet taxonomy labels "
        "(from a species classifier when one is installed), geofenced by country."
    )
    Params = AnimalsParams

    def detector_card(self, params: AnimalsParams) -> ModelCard:
        registry = self.ctx.registry
        return registry.card(params.model or default_detector(registry))

    def classifier_card(self, params: AnimalsParams) -> ModelCard | None:
        return classifier_card(self.ctx.registry, params)

    def check_params(self, params: BaseModel) -> None:
        animals = cast(AnimalsParams, params)
        card = self.detector_card(animals)
        if card.task != "detect" or not category_ids(card):
            raise BatchVisionError(
                ErrorCode.INVALID_PARAMETER,
                f"animals: model '{card.name}' has neither MegaDetector classes "
                "(animal, person, vehicle) nor COCO classes that map to them",
            )
        if animals.classify:
            require_speciesnet(self.ctx.settings)  # refuse up front, never invent labels
            self.classifier_card(animals)  # an unknown classifier is refused here too

    def models(self, params: BaseModel) -> list[str]:
        animals = cast(AnimalsParams, params)
        classifier = self.classifier_card(animals)
        return [self.detector_card(animals).name] + ([classifier.name] if classifier else [])

    def decode_side(self, params: BaseModel) -> int | None:
        animals = cast(AnimalsParams, params)
        if self.classifier_card(animals) is not None:
            # Full resolution: the classifier sees the animal's own pixels, as SpeciesNet crops
            # them from the original photo. A draft decode sized for the detector (1/8 scale on
            # a 12 MP camera-trap frame) would leave a small animal a few dozen pixels wide,
            # stretched to 480 x 480, and cost the classifier the detail it tells species by.
            return None
        return max(self.detector_card(animals).size)

    def plan(self, params: AnimalsParams) -> _Plan:
        card = self.detector_card(params)
        mode = detector_mode(card)
        decode = DecodeParams(
            score_threshold=params.threshold,
            nms_iou=_NMS_IOU,
            max_detections=_MAX_DETECTIONS,
            class_filter=category_ids(card),
        )
        classifier = self.classifier_card(params)
        taxonomy = geofence = None
        if params.classify:
            files = require_speciesnet(self.ctx.settings)
            taxonomy, geofence = self._taxonomy(files, classifier), files.geofence()
        names = card.name + (f"+{classifier.name}" if classifier else "")
        header = {
            "model": card.name,
            "model_version": names + (TAXONOMY_SUFFIX if params.classify else ""),
            "mode": mode,
        }
        place = None
        if params.classify and params.country and params.latitude is not None:
            assert params.longitude is not None  # the params validator pairs them
            place = nearest_region(params.country, params.latitude, params.longitude)
        return _Plan(card, mode, decode, params, taxonomy, geofence, header, classifier, place)

    def _taxonomy(self, files: SpeciesNetFiles, classifier: ModelCard | None) -> Taxonomy:
        """The taxonomy, with the classifier's own label list as `labels` (its output order)."""
        if classifier is None:
            return files.taxonomy_index()
        return load_taxonomy(files.taxonomy, self.ctx.registry.require_labels(classifier.name))

    async def run(self, images: list[DecodedImage], params: BaseModel) -> list[SkillOutput]:
        plan = self.plan(cast(AnimalsParams, params))
        return await self.per_item(self._one(image, plan) for image in images)

    async def _one(self, image: DecodedImage, plan: _Plan) -> AnimalsOutput:
        dets = await self.ctx.engine.infer(plan.card.name, DetectRequest(image, plan.decode))
        boxes = boxes_of(dets, plan.card, image)
        return label_image(boxes, image, plan, await self._classify(boxes, image, plan))

    async def _classify(
        self, boxes: Sequence[Box], image: DecodedImage, plan: _Plan
    ) -> dict[Box, Scores]:
        """The classifier's top labels for each animal's best box (empty without a classifier)."""
        classifier, taxonomy = plan.classifier, plan.taxonomy
        tops = [group[0] for group in group_animals(boxes)]
        tops = [box for box in tops if box.category is DetectorCategory.ANIMAL]
        if classifier is None or taxonomy is None or not tops:
            return {}
        # The crops of one image are one CPU job; crops of every image in flight share runs.
        crops = [Crop(image, box.xyxy) for box in tops]
        rows = await self.ctx.engine.infer_many(classifier.name, crops)
        return {box: top_labels(row, taxonomy) for box, row in zip(tops, rows, strict=True)}


def label_image(
    boxes: Sequence[Box],
    image: DecodedImage,
    plan: _Plan,
    predictions: Mapping[Box, Scores] | None = None,
) -> AnimalsOutput:
    params = plan.params
    labelled: Sequence[tuple[Box, Taxon | None]] = [(box, None) for box in boxes]
    if plan.taxonomy is not None and plan.geofence is not None:
        labelled = classified(
            boxes,
            plan.mode,
            plan.taxonomy,
            plan.geofence,
            params,
            predictions=predictions,
            state=plan.state,
        )
    info = geofence_info(
        plan.geofence,
        params.country,
        classify=params.classify,
        area_hint=params.latitude is not None,
        place=plan.place,
    )
    annotations = [annotation(box, taxon) for box, taxon in labelled]
    header = plan.header
    return {
        "model": header["model"],
        "model_version": header["model_version"],
        "mode": header["mode"],
        "annotations": annotations,
        "geofence": info,
    }


def classified(
    boxes: Sequence[Box],
    mode: Mode,
    taxonomy: Taxonomy,
    geofence: Geofence,
    params: AnimalsParams,
    *,
    predictions: Mapping[Box, Scores] | None = None,
    state: str | None = None,
) -> list[tuple[Box, Taxon]]:
    """One image's annotations with `classify=true`: one per animal (`group_animals`), labelled
    by the classifier's `predictions` for its best box when they are confident
    (`classifier_taxon`), else by `group_taxon`, then geofenced and herd-smoothed.

    An annotation keeps its best box and that box's own score. The summed scores only choose the
    label: the score stays the detector's confidence in that box, the number `threshold` filtered
    and downstream tools threshold as MegaDetector's `conf`, equal to the same box's score with
    `classify=false`. (YOLOX scores classes with independent sigmoids, so a sum is no probability
    and can exceed 1.)
    """
    allowed = permitted(geofence, params.country, params.profile, state)
    groups = group_animals(boxes)
    found = predictions or {}
    raw = []
    for group in groups:
        scores = found.get(group[0])
        taxon = classifier_taxon(scores, allowed) if scores is not None else None
        raw.append(taxon or detector_group_taxon(group, mode, taxonomy, allowed))
    tops = [group[0] for group in groups]
    # A roll-up chose among allowed taxa already; `label_taxa` fences the kept single taxa.
    taxa = label_taxa(
        raw,
        [box.score for box in tops],
        geofence=geofence,
        country=params.country,
        profile=params.profile,
        smooth=params.smooth_herd,
        state=state,
    )
    return list(zip(tops, taxa, strict=True))


def detector_group_taxon(
    group: Sequence[Box],
    mode: Mode,
    taxonomy: Taxonomy,
    allowed: Callable[[Taxon], bool] | None,
) -> Taxon:
    """One animal's label from the detector's classes alone (`group_taxon` of its boxes)."""
    return group_taxon(
        [detector_taxon(mode, b.category, b.detector_label, taxonomy) for b in group],
        [b.score for b in group],
        taxonomy,
        allowed,
    )
