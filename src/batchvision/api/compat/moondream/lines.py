"""The Moondream Batch API surface: which lines we can run, and their results in Moondream's form.

Moondream's four skills are caption, query, detect and point. detect and point whose `object`
names a COCO class (`coco_class_for`: any case, plurals, common synonyms) run on the local
object detector, since that is faster and costs no vision-language call; every other valid line
(caption, query, detect / point on any other phrase) runs on the server's vision-language
backend (the `vlm` card: `BATCHVISION_VLM_URL`). Without a backend such a line ends with
`processing_error` saying why, never with a made-up answer. A query over several images
(`images`) is ONE call that sees them all. Field problems are `invalid_request` and are
reported first, so a client learns about a malformed line even when it could not have run.

A line's fields are typed by pydantic models (`typed_line`): `MoondreamLine`, a union
discriminated by `skill` over `CaptionLine`, `QueryLine`, `DetectLine` and `PointLine`.
A skill outside the four is `unknown_skill` listing them, before any field is looked at.
Field rules (from the Moondream Batch API reference, unknown extra fields ignored):

- caption: `length` is "short", "normal" (default) or "long".
- query: `question` a non-blank string (required); `reasoning` a boolean (default true).
- detect / point: `object` a non-blank string of at most 500 characters (required).
- `settings` (caption / query only): an object with optional `temperature` (0..2), `top_p`
  (0 exclusive..1) and `max_tokens` (integer 1..4096); other keys in it are ignored. Booleans
  are never numbers, numeric strings are not numbers, and `256.0` is not an integer.
- Several images (`images`) only for query.
- A field whose value is JSON `null` counts as absent (in `settings` too), as `parse_line` does
  for image fields.

Messages: `"<skill>: <problem>; <problem>…"`, every bad field at once, each naming its path and
its rule: `'settings.top_p' must be a number greater than 0 and at most 1`, `missing required
field 'question'`, `'object' is longer than 500 characters`; a value of the wrong JSON type adds
which type came (`(got a string)`), never the value itself. The rule is the field's
`description`, so the model is the one place a rule is written.

`id` (`id_problem`, the surface's `check_id`): the page types it "any", so any JSON value is
echoed unchanged in the result line; `null` is no id (echoed as `null`). Only a number too large
for a 64-bit float is refused (see `id_problem`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from batchvision.core.errors import ErrorCode, json_type
from batchvision.core.types import ItemError, Task, normalized_xyxy
from batchvision.models.vlm.config import DEFAULT_VLM_CARD
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


@dataclass(frozen=True)
class VlmPlan:
    """A valid line the vision-language backend answers: the core task to run, whether the
    client asked for the reasoning, and whether the task runs once over all the line's images."""

    task: Task
    reasoning: bool = False
    together: bool = False


def plan_line(
    line: JobLine, class_names: Sequence[str], vlm_model: str = DEFAULT_VLM_CARD
) -> DetectorPlan | VlmPlan | ItemError:
    """Validate a Moondream line and decide how it runs (the rule in the module docstring):
    `unknown_skill` for a skill outside the four, then `invalid_request` for any field problem,
    else the plan: the detector (`DetectorPlan`) or the `vlm_model` backend (`VlmPlan`)."""
    fields = typed_line(line)
    if isinstance(fields, ItemError):
        return fields
    if isinstance(fields, DetectLine | PointLine):
        class_name = coco_class_for(fields.object, class_names)
        if class_name is not None:
            return DetectorPlan(skill=fields.skill, class_name=class_name)
        return VlmPlan(Task(fields.skill, {"model": vlm_model, "object": fields.object.strip()}))
    params: dict[str, Any] = {"model": vlm_model}
    if fields.settings is not None:
        params["settings"] = fields.settings.model_dump(exclude_none=True)
    if isinstance(fields, CaptionLine):
        return VlmPlan(Task("caption", {**params, "length": fields.length}))
    query = {**params, "question": fields.question, "reasoning": fields.reasoning}
    return VlmPlan(Task("query", query), fields.reasoning, together=len(line.images) > 1)


def needs_vlm_message(plan: VlmPlan, why: str) -> str:
    """Why a line for the backend could not run, naming a non-COCO object the client sent."""
    skill = plan.task.skill
    target = plan.task.params.get("object")
    if target is None:
        return f"{skill}: {why}"
    shown = str(target)[:_ECHO_CHARS]
    return (
        f"{skill}: '{shown}' is not a COCO object class, so it needs the vision-language "
        f"model: {why}"
    )


# --- typed lines ------------------------------------------------------------------------------
#
# A field's `description` is the rule its error message states: "'<path>' must be <description>".

_RULE_ERROR = "moondream_rule"  # a custom error whose message is already the whole sentence


class _Fields(BaseModel):
    """Unknown keys are ignored; a key whose value is JSON null counts as absent."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None}
        return data


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("blank")
    return text


Number = Annotated[float, Strict()]  # a JSON number (an integer too), never a boolean or a string
Integer = Annotated[int, Strict()]  # a JSON integer: not 256.0, not true
NonBlank = Annotated[str, Strict(), AfterValidator(_not_blank)]


class GenerationSettings(_Fields):
    """`settings` of caption and query; other keys (e.g. `seed`) are ignored."""

    temperature: Number | None = Field(None, ge=0, le=2, description="a number from 0 to 2")
    top_p: Number | None = Field(
        None, gt=0, le=1, description="a number greater than 0 and at most 1"
    )
    max_tokens: Integer | None = Field(
        None, ge=1, le=MAX_TOKENS, description=f"an integer from 1 to {MAX_TOKENS}"
    )


_SETTINGS_RULE = "an object with optional temperature, top_p and max_tokens"


class CaptionLine(_Fields):
    skill: Literal["caption"]
    length: Literal["short", "normal", "long"] = Field(
        "normal", description="one of " + ", ".join(f"'{name}'" for name in CAPTION_LENGTHS)
    )
    settings: GenerationSettings | None = Field(None, description=_SETTINGS_RULE)


class QueryLine(_Fields):
    skill: Literal["query"]
    question: NonBlank = Field(description="a non-empty string")
    reasoning: Annotated[bool, Strict()] = Field(True, description="true or false")
    settings: GenerationSettings | None = Field(None, description=_SETTINGS_RULE)


def _no_settings(value: Any) -> None:
    raise PydanticCustomError(_RULE_ERROR, "'settings' is only supported by caption and query")


class _ObjectLine(_Fields):
    object: NonBlank = Field(max_length=MAX_OBJECT_CHARS, description="a non-empty string")
    settings: Annotated[None, PlainValidator(_no_settings)] = None


class DetectLine(_ObjectLine):
    skill: Literal["detect"]


class PointLine(_ObjectLine):
    skill: Literal["point"]


MoondreamLine = Annotated[
    CaptionLine | QueryLine | DetectLine | PointLine, Field(discriminator="skill")
]
_LINE_MODELS: dict[str, type[_Fields]] = {
    "caption": CaptionLine,
    "query": QueryLine,
    "detect": DetectLine,
    "point": PointLine,
}
_LINES: TypeAdapter[MoondreamLine] = TypeAdapter(MoondreamLine)


def typed_line(line: JobLine) -> MoondreamLine | ItemError:
    """The line's skill and fields as their typed model, or the line's error:
    `unknown_skill` outside the four, else `invalid_request` naming every bad field."""
    skill = line.skill
    if skill not in MOONDREAM_SKILLS:
        available = ", ".join(sorted(MOONDREAM_SKILLS))
        return ItemError(
            ErrorCode.UNKNOWN_SKILL, f"unknown skill '{skill[:100]}'; available: {available}"
        )
    if skill != "query" and len(line.images) > 1:
        problem = "only one image is allowed; several images ('images') are only for query"
        return ItemError(ErrorCode.INVALID_REQUEST, f"{skill}: {problem}", skill)
    try:
        return _LINES.validate_python({**line.params, "skill": skill})
    except ValidationError as exc:
        problems = "; ".join(_describe(error, _LINE_MODELS[skill]) for error in exc.errors())
        return ItemError(ErrorCode.INVALID_REQUEST, f"{skill}: {problems}", skill)


def _describe(error: ErrorDetails, model: type[BaseModel]) -> str:
    """One pydantic error as "'<field path>' must be <rule>" (or the rule's own sentence)."""
    path = [str(part) for part in error["loc"][1:]]  # loc[0] is the skill tag
    name = ".".join(path)
    kind = error["type"]
    if kind == _RULE_ERROR:
        return error["msg"]
    if kind == "missing":
        return f"missing required field '{name}'"
    if kind == "string_too_long":
        limit = error.get("ctx", {}).get("max_length", MAX_OBJECT_CHARS)
        return f"'{name}' is longer than {limit} characters"
    rule = f"'{name}' must be {_rule(model, path)}"
    if kind.endswith("_type"):  # the wrong JSON type: say which one came
        rule += f" (got {json_type(error['input'])})"
    return rule


def _rule(model: type[BaseModel], path: Sequence[str]) -> str:
    """The `description` of the field at `path`, descending into nested models."""
    rule = "valid"
    current: type[BaseModel] | None = model
    for name in path:
        field = current.model_fields.get(name) if current else None
        if field is None:
            break
        rule = field.description or rule
        current = _nested_model(field.annotation)
    return rule


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model in `Model` or `Model | None`, if any."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def id_problem(raw_id: Any) -> str | None:
    """The page's `id` is "any": every JSON value (string, number, boolean, array, object, of any
    size the line limit allows) is echoed unchanged in its result line. The one refusal is a
    number too large for a 64-bit float (`1e400`): it parses as infinity, which JSON cannot
    write back, so the line is `invalid_request` rather than echoing something that is not JSON."""
    pending = [raw_id]
    while pending:  # a loop, not recursion: the validator allows deep nesting
        value = pending.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return "'id' holds a number too large to represent; send it as a string"
        if isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return None


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


def vlm_result(plan: VlmPlan, output: Mapping[str, Any], width: int, height: int) -> dict[str, Any]:
    """A vision-language skill's output (skills/caption, query, detect, point: pixels) in
    Moondream's form: `caption`; `answer` (+ `reasoning` when asked for and given); `objects` /
    `points` as fractions of the image (`width` x `height`), clamped to 0..1."""
    skill = plan.task.skill
    if skill == "caption":
        return {"caption": output["caption"]}
    if skill == "query":
        result = {"answer": output["answer"]}
        if plan.reasoning and "reasoning" in output:
            result["reasoning"] = output["reasoning"]
        return result
    if skill == "detect":
        keys = ("x_min", "y_min", "x_max", "y_max")
        boxes = [normalized_xyxy(item["box"], width, height) for item in output["objects"]]
        return {"objects": [dict(zip(keys, box, strict=True)) for box in boxes]}
    return {"points": [_fraction_point(p["x"], p["y"], width, height) for p in output["points"]]}


def _fraction_point(x: float, y: float, width: int, height: int) -> dict[str, float]:
    return {
        "x": round(min(max(x / width, 0.0), 1.0), 5),
        "y": round(min(max(y / height, 0.0), 1.0), 5),
    }
