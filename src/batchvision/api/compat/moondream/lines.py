"""The Moondream Batch API surface: which lines we can run, and their results in Moondream's form.

Moondream's four skills are caption, query, detect and point. Until a vision-language model is
configured, only detect and point whose `object` names a COCO class can run, on the object
detector; every other valid line ends with `processing_error` saying why, never with a made-up
answer. Field problems are `invalid_request` and are reported first, so a client learns about a
malformed line even though the line could not have run anyway.

Field rules (from the Moondream Batch API reference, unknown extra fields ignored):

- caption: `length` is "short", "normal" (default) or "long".
- query: `question` a non-blank string (required); `reasoning` a boolean (default true).
- detect / point: `object` a non-blank string of at most 500 characters (required).
- `settings` (caption / query only): an object with optional `temperature` (0..2), `top_p`
  (0 exclusive..1) and `max_tokens` (integer 1..4096). Booleans are never numbers.
- Several images (`images`) only for query.
- A field whose value is JSON `null` counts as absent, as `parse_line` does for image fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from batchvision.core.errors import ErrorCode
from batchvision.core.types import ItemError, normalized_xyxy
from batchvision.skills.detect import DetectOutput
from batchvision.work.lines import JobLine

MOONDREAM_SKILLS: frozenset[str] = frozenset({"caption", "query", "detect", "point"})

CAPTION_LENGTHS = ("short", "normal", "long")
MAX_OBJECT_CHARS = 500
MAX_TOKENS = 4096
_ECHO_CHARS = 100  # how much of a client's `object` an error message repeats

# Other names for COCO classes → the COCO name. Only words whose every usual meaning in a photo
# is that class: "bat" (animal or baseball bat), "bag" (handbag, backpack or suitcase), "glass"
# (wine glass or cup), "monitor", "mobile", "lamb" (animal or meat) and "calf" (animal or leg)
# are left out on purpose, since a wrong class is worse than none.
# Plurals are derived (see `_plurals`), so only singular forms are listed here.
COCO_SYNONYMS: dict[str, tuple[str, ...]] = {
    "person": (
        "people", "human", "man", "woman", "pedestrian", "child", "kid", "boy", "girl",
        "adult", "lady", "gentleman", "baby", "toddler",
    ),
    "bicycle": ("bike", "push bike", "pushbike"),
    "car": ("automobile", "sedan", "taxi", "suv", "hatchback"),
    "motorcycle": ("motorbike", "motor cycle", "motor bike", "moped"),
    "airplane": ("aeroplane", "plane", "airliner", "jetliner"),
    "bus": ("autobus", "school bus", "double decker bus"),
    "train": ("locomotive", "railway train", "passenger train", "freight train", "tram"),
    "truck": ("lorry", "pickup truck", "pick up truck", "semi truck", "dump truck"),
    "boat": ("ship", "sailboat", "sail boat", "yacht", "canoe", "kayak", "rowboat", "ferry"),
    "traffic light": ("traffic signal", "stoplight", "stop light", "traffic lamp"),
    "fire hydrant": ("hydrant", "fireplug", "fire plug"),
    "stop sign": (),
    "parking meter": (),
    "bench": ("park bench",),
    "bird": ("pigeon", "seagull", "gull", "sparrow", "parrot", "duck", "goose", "swan"),
    "cat": ("kitten", "kitty", "housecat", "house cat"),
    "dog": ("puppy", "doggy", "doggie", "hound"),
    "horse": ("pony", "foal", "stallion", "mare"),
    "sheep": (),
    "cow": ("cattle", "bull", "ox"),
    "elephant": (),
    "bear": ("polar bear", "brown bear", "grizzly bear", "black bear"),
    "zebra": (),
    "giraffe": (),
    "backpack": ("back pack", "rucksack", "knapsack", "bookbag"),
    "umbrella": ("parasol",),
    "handbag": ("hand bag", "purse", "pocketbook"),
    "tie": ("necktie", "neck tie", "bow tie", "bowtie"),
    "suitcase": ("suit case", "luggage"),
    "frisbee": ("flying disc",),
    "skis": ("ski", "pair of skis"),
    "snowboard": ("snow board",),
    "sports ball": (
        "ball", "football", "soccer ball", "basketball", "volleyball", "tennis ball",
        "golf ball", "rugby ball", "beach ball",
    ),
    "kite": (),
    "baseball bat": (),
    "baseball glove": ("baseball mitt", "catcher's mitt", "catchers mitt"),
    "skateboard": ("skate board",),
    "surfboard": ("surf board",),
    "tennis racket": ("tennis racquet", "racket", "racquet"),
    "bottle": (),
    "wine glass": ("wineglass",),
    "cup": ("mug", "coffee cup", "teacup", "tea cup", "coffee mug"),
    "fork": (),
    "knife": (),
    "spoon": (),
    "bowl": (),
    "banana": (),
    "apple": (),
    "sandwich": (),
    "orange": (),
    "broccoli": (),
    "carrot": (),
    "hot dog": ("hotdog", "frankfurter"),
    "pizza": (),
    "donut": ("doughnut",),
    "cake": (),
    "chair": ("armchair",),
    "couch": ("sofa", "settee"),
    "potted plant": (
        "plant", "houseplant", "house plant", "pot plant", "pottedplant",
    ),
    "bed": (),
    "dining table": ("table", "diningtable", "kitchen table", "dinner table"),
    "toilet": ("toilet bowl",),
    "tv": (
        "television", "tvmonitor", "tv monitor", "tv set", "television set", "computer monitor",
    ),
    "laptop": ("laptop computer", "notebook computer"),
    "mouse": ("computer mouse",),
    "remote": ("remote control", "tv remote", "remote controller"),
    "keyboard": ("computer keyboard",),
    "cell phone": (
        "cellphone", "phone", "mobile phone", "smartphone", "smart phone", "cellular phone",
    ),
    "microwave": ("microwave oven",),
    "oven": (),
    "toaster": (),
    "sink": ("washbasin", "wash basin"),
    "refrigerator": ("fridge", "icebox"),
    "book": (),
    "clock": ("wall clock", "alarm clock"),
    "vase": (),
    "scissors": ("scissor", "pair of scissors"),
    "teddy bear": ("teddy", "teddybear", "stuffed bear"),
    "hair drier": ("hair dryer", "hairdryer", "hairdrier", "blow dryer", "blowdryer"),
    "toothbrush": ("tooth brush",),
}  # fmt: skip

# Plurals that no suffix rule makes; a word listed with () has no other plural form.
_IRREGULAR_PLURALS: dict[str, tuple[str, ...]] = {
    "person": ("people", "persons"),
    "man": ("men",),
    "woman": ("women",),
    "child": ("children",),
    "gentleman": ("gentlemen",),
    "mouse": ("mice",),
    "goose": ("geese",),
    "ox": ("oxen",),
    "knife": ("knives",),
    "sheep": (),
    "people": (),
    "cattle": (),
    "luggage": (),
    "broccoli": (),
    "skis": (),
    "scissors": (),
    "bus": ("buses", "busses"),
}

_ARTICLES = ("a ", "an ", "the ")


@dataclass(frozen=True)
class DetectorPlan:
    """A valid detect / point line that the object detector can answer."""

    skill: Literal["detect", "point"]
    class_name: str  # one of the detector's class names


def coco_class_for(name: str, class_names: Sequence[str]) -> str | None:
    """The detector class (an element of class_names, COCO 80 names as in the model's label list)
    that `name` means, or None.

    Matching ignores case, surrounding and repeated whitespace, `-` / `_` versus space, spaces
    altogether ("trafficlight"), and a leading article; it accepts plurals and the synonyms in
    `COCO_SYNONYMS`. A synonym only counts when its COCO class is in `class_names`.
    """
    return _surface_forms(tuple(class_names)).get(_normalise(name))


def _normalise(text: str) -> str:
    words = text.lower().replace("-", " ").replace("_", " ").split()
    joined = " ".join(words)
    for article in _ARTICLES:
        if joined.startswith(article):
            return joined[len(article) :]
    return joined


@lru_cache(maxsize=16)
def _surface_forms(class_names: tuple[str, ...]) -> dict[str, str]:
    """Every accepted spelling (normalised, with and without spaces) → its class name.

    Built once per label list. A spelling that two classes would claim is dropped rather than
    guessed, so a custom label list can never turn a synonym into the wrong class."""
    claims: dict[str, set[str]] = {}
    for class_name in class_names:
        key = _normalise(class_name)
        for form in _with_plurals([key, *COCO_SYNONYMS.get(key, ())]):
            for spelling in (form, form.replace(" ", "")):
                claims.setdefault(spelling, set()).add(class_name)
    forms = {spelling: owners.pop() for spelling, owners in claims.items() if len(owners) == 1}
    # A class's own name always wins over another class's derived form.
    forms.update({_normalise(name): name for name in class_names})
    return forms


def _with_plurals(phrases: Iterable[str]) -> set[str]:
    """Each phrase and the plurals of its last word ("cell phone" → "cell phones")."""
    forms: set[str] = set()
    for phrase in phrases:
        head, _, last = phrase.rpartition(" ")
        prefix = f"{head} " if head else ""
        forms.add(phrase)
        forms.update(prefix + plural for plural in _plurals(last))
    return forms


def _plurals(word: str) -> tuple[str, ...]:
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return (word + "es",)
    if len(word) > 1 and word.endswith("y") and word[-2] not in "aeiou":
        return (word[:-1] + "ies",)
    return (word + "s",)


def plan_line(line: JobLine, class_names: Sequence[str]) -> DetectorPlan | ItemError:
    """Validate a Moondream line and decide how it runs; ItemError (code,
    message, skill).

    `unknown_skill` for a skill outside the four, then `invalid_request` for any field problem,
    then `processing_error` for a valid line that needs the (not yet configured)
    vision-language model. Otherwise the plan to run it on the object detector."""
    skill = line.skill
    if skill not in MOONDREAM_SKILLS:
        available = ", ".join(sorted(MOONDREAM_SKILLS))
        return ItemError(
            ErrorCode.UNKNOWN_SKILL, f"unknown skill '{skill[:100]}'; available: {available}"
        )
    problem = _field_problem(skill, line)
    if problem is not None:
        return ItemError(ErrorCode.INVALID_REQUEST, f"{skill}: {problem}", skill)
    if skill == "detect":
        return _detector_plan("detect", line.params["object"], class_names)
    if skill == "point":
        return _detector_plan("point", line.params["object"], class_names)
    return ItemError(
        ErrorCode.PROCESSING_ERROR,
        f"{skill}: no vision-language model is configured on this server, and {skill} needs one",
        skill,
    )


def _detector_plan(
    skill: Literal["detect", "point"], target: str, class_names: Sequence[str]
) -> DetectorPlan | ItemError:
    class_name = coco_class_for(target, class_names)
    if class_name is not None:
        return DetectorPlan(skill=skill, class_name=class_name)
    shown = target.strip()[:_ECHO_CHARS]
    return ItemError(
        ErrorCode.PROCESSING_ERROR,
        f"{skill}: '{shown}' is not a COCO object class, and no vision-language model is "
        "configured on this server; without one only the COCO classes are supported "
        "(e.g. person, car, dog, cell phone)",
        skill,
    )


def _field_problem(skill: str, line: JobLine) -> str | None:
    """What is wrong with the line's fields for `skill`, or None; the first problem found."""
    params = line.params
    if skill != "query" and len(line.images) > 1:
        return "only one image is allowed; several images ('images') are only for query"
    if skill == "caption":
        return _caption_problem(params) or _settings_problem(params)
    if skill == "query":
        return _query_problem(params) or _settings_problem(params)
    if params.get("settings") is not None:
        return "'settings' is only supported by caption and query"
    return _object_problem(params)


def _caption_problem(params: Mapping[str, Any]) -> str | None:
    length = params.get("length")
    if length is None or (isinstance(length, str) and length in CAPTION_LENGTHS):
        return None
    return "'length' must be one of " + ", ".join(f"'{name}'" for name in CAPTION_LENGTHS)


def _query_problem(params: Mapping[str, Any]) -> str | None:
    question = params.get("question")
    if question is None:
        return "missing required field 'question'"
    if not isinstance(question, str) or not question.strip():
        return "'question' must be a non-empty string"
    reasoning = params.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, bool):
        return "'reasoning' must be true or false"
    return None


def _object_problem(params: Mapping[str, Any]) -> str | None:
    target = params.get("object")
    if target is None:
        return "missing required field 'object'"
    if not isinstance(target, str) or not target.strip():
        return "'object' must be a non-empty string"
    if len(target) > MAX_OBJECT_CHARS:
        return f"'object' is longer than {MAX_OBJECT_CHARS} characters"
    return None


def _settings_problem(params: Mapping[str, Any]) -> str | None:
    settings = params.get("settings")
    if settings is None:
        return None
    if not isinstance(settings, dict):
        return "'settings' must be an object"
    temperature = settings.get("temperature")
    if temperature is not None and not (_is_number(temperature) and 0 <= temperature <= 2):
        return "'settings.temperature' must be a number from 0 to 2"
    top_p = settings.get("top_p")
    if top_p is not None and not (_is_number(top_p) and 0 < top_p <= 1):
        return "'settings.top_p' must be a number greater than 0 and at most 1"
    max_tokens = settings.get("max_tokens")
    if max_tokens is not None and not (_is_integer(max_tokens) and 1 <= max_tokens <= MAX_TOKENS):
        return f"'settings.max_tokens' must be an integer from 1 to {MAX_TOKENS}"
    return None


def _is_number(value: object) -> bool:
    # bool is a subclass of int in Python, but `true` is no number in JSON.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def moondream_result(
    plan: DetectorPlan, detect_output: DetectOutput, width: int, height: int
) -> dict[str, Any]:
    """Our detect output for ONE image (pixel boxes, see skills/detect.py) in Moondream's form:
    detect → {"objects": [{"x_min","y_min","x_max","y_max"}]}, point → {"points": [{"x","y"}]}
    (centres), as fractions of the image clamped to 0..1 (Moondream's coordinates never leave
    the image, whatever a decoder did), only objects whose label == plan.class_name, in order."""
    boxes = [
        normalized_xyxy(item["box"], width, height)
        for item in detect_output["objects"]
        if item["label"] == plan.class_name
    ]
    if plan.skill == "detect":
        keys = ("x_min", "y_min", "x_max", "y_max")
        return {"objects": [dict(zip(keys, box, strict=True)) for box in boxes]}
    return {
        "points": [
            {"x": round((x1 + x2) / 2, 5), "y": round((y1 + y2) / 2, 5)} for x1, y1, x2, y2 in boxes
        ]
    }
