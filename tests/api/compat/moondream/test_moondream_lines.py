"""Tests for the Moondream Batch API surface: COCO name matching, per-line validation and
planning (invalid_request before processing_error, never a made-up answer), and the conversion of
our detect output to Moondream's detect / point results."""

from __future__ import annotations

import base64
import io
import json
from typing import Any, Literal, get_args

import pytest
from PIL import Image

from batchvision.api.compat.moondream.jobs import MoondreamJobs
from batchvision.api.compat.moondream.lines import (
    MOONDREAM_SKILLS,
    CaptionLine,
    DetectLine,
    DetectorPlan,
    GenerationSettings,
    MoondreamLine,
    PointLine,
    QueryLine,
    VlmPlan,
    coco_class_for,
    moondream_result,
    needs_vlm_message,
    plan_line,
    typed_line,
)
from batchvision.core.errors import ErrorCode
from batchvision.core.types import ImageInput, ItemError, Task
from batchvision.intake.body import BodyLimits
from batchvision.models.cards import shipped_labels
from batchvision.work.lines import JobLine, LineError, parse_line

COCO80 = list(shipped_labels("coco80"))
LIMITS = BodyLimits(
    max_request_bytes=1 << 20, max_image_bytes=1 << 16, max_images=4, max_field_bytes=1 << 16
)


def _png_b64() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), (200, 30, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


PNG_B64 = _png_b64()


def job(skill: str, *, images: int = 1, **params: Any) -> JobLine:
    """A JobLine parsed by the real `parse_line` from one JSON line with real PNG data."""
    body: dict[str, Any] = {"id": "x1", "skill": skill, **params}
    if images == 1:
        body["image"] = PNG_B64
    else:
        body["images"] = [PNG_B64] * images
    parsed = parse_line(0, json.dumps(body).encode(), LIMITS)
    assert isinstance(parsed, JobLine), parsed
    return parsed


def error_of(result: DetectorPlan | VlmPlan | ItemError) -> ItemError:
    assert isinstance(result, ItemError), result
    return result


# --- coco_class_for ---------------------------------------------------------------------------


def test_the_shipped_label_list_is_coco80() -> None:
    assert len(COCO80) == 80
    assert {"person", "traffic light", "cell phone", "dining table", "hair drier"} <= set(COCO80)


@pytest.mark.parametrize("name", COCO80)
def test_every_class_name_means_itself_in_any_case_and_padding(name: str) -> None:
    assert coco_class_for(name, COCO80) == name
    assert coco_class_for(f"  {name.upper()}\t", COCO80) == name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("people", "person"),
        ("persons", "person"),
        ("man", "person"),
        ("Woman", "person"),
        ("pedestrians", "person"),
        ("children", "person"),
        ("cars", "car"),
        ("motorbike", "motorcycle"),
        ("motorbikes", "motorcycle"),
        ("aeroplane", "airplane"),
        ("plane", "airplane"),
        ("airplanes", "airplane"),
        ("sofa", "couch"),
        ("couches", "couch"),
        ("tv", "tv"),
        ("television", "tv"),
        ("tvmonitor", "tv"),
        ("cellphone", "cell phone"),
        ("phone", "cell phone"),
        ("mobile phone", "cell phone"),
        ("smartphones", "cell phone"),
        ("laptop computer", "laptop"),
        ("table", "dining table"),
        ("diningtable", "dining table"),
        ("hand bag", "handbag"),
        ("purse", "handbag"),
        ("doughnut", "donut"),
        ("doughnuts", "donut"),
        ("bike", "bicycle"),
        ("bicycles", "bicycle"),
        ("ball", "sports ball"),
        ("football", "sports ball"),
        ("soccer ball", "sports ball"),
        ("plant", "potted plant"),
        ("houseplant", "potted plant"),
        ("pottedplant", "potted plant"),
        ("hydrant", "fire hydrant"),
        ("puppy", "dog"),
        ("puppies", "dog"),
        ("dogs", "dog"),
        ("kitten", "cat"),
        ("buses", "bus"),
        ("benches", "bench"),
        ("knives", "knife"),
        ("mice", "mouse"),
        ("sheep", "sheep"),
        ("ski", "skis"),
        ("wine glasses", "wine glass"),
        ("traffic-lights", "traffic light"),
        ("TrafficLight", "traffic light"),
        ("hot_dog", "hot dog"),
        ("hotdogs", "hot dog"),
        ("teddy bears", "teddy bear"),
        ("hair dryer", "hair drier"),
        ("fridge", "refrigerator"),
        ("a dog", "dog"),
        ("the  People ", "person"),
    ],
)
def test_synonyms_plurals_and_spellings(name: str, expected: str) -> None:
    assert coco_class_for(name, COCO80) == expected


@pytest.mark.parametrize(
    "name",
    [
        "",
        "   ",
        "door handle",
        "sky",
        "tree",
        "glass",  # a wine glass or a cup: ambiguous, so no class
        "bat",  # the animal or a baseball bat
        "bag",
        "animal",
        "vehicle",
        "dog and cat",
        "dogs cats",
        "a",
        "the",
    ],
)
def test_unrelated_or_ambiguous_words_mean_no_class(name: str) -> None:
    assert coco_class_for(name, COCO80) is None


def test_similar_names_keep_their_own_classes() -> None:
    # Substrings and near-names must never fall through to a neighbouring class.
    assert coco_class_for("hot dog", COCO80) == "hot dog"
    assert coco_class_for("teddy bear", COCO80) == "teddy bear"
    assert coco_class_for("bear", COCO80) == "bear"
    assert coco_class_for("baseball bat", COCO80) == "baseball bat"
    assert coco_class_for("baseball glove", COCO80) == "baseball glove"
    assert coco_class_for("tv remote", COCO80) == "remote"
    assert coco_class_for("microwave oven", COCO80) == "microwave"
    assert coco_class_for("oven", COCO80) == "oven"


def test_a_synonym_needs_its_class_in_the_label_list() -> None:
    assert coco_class_for("people", ["car", "dog"]) is None
    assert coco_class_for("puppy", ["car", "dog"]) == "dog"


def test_the_answer_is_the_label_lists_own_spelling() -> None:
    labels = ["Person", "Traffic Light"]
    assert coco_class_for("people", labels) == "Person"
    assert coco_class_for("traffic lights", labels) == "Traffic Light"


def test_a_spelling_two_classes_claim_is_refused_not_guessed() -> None:
    # A custom list with both "handbag" and "purse" as classes: each name is its own class,
    # and the synonym never steals "purse" for handbag.
    assert coco_class_for("purse", ["handbag", "purse"]) == "purse"
    assert coco_class_for("handbags", ["handbag", "purse"]) == "handbag"


def test_a_derived_form_two_classes_share_is_dropped() -> None:
    # "busses" is a plural of both "bus" and "buss"; rather than pick one, neither gets it.
    assert coco_class_for("busses", ["bus", "buss"]) is None
    assert coco_class_for("buses", ["bus", "buss"]) == "bus"
    assert coco_class_for("buss", ["bus", "buss"]) == "buss"


# --- plan_line: skills and images -------------------------------------------------------------


def test_moondream_skills() -> None:
    assert frozenset({"caption", "query", "detect", "point"}) == MOONDREAM_SKILLS


@pytest.mark.parametrize("skill", ["segment", "Detect", "ocr"])
def test_an_unknown_skill_is_unknown_skill(skill: str) -> None:
    error = error_of(plan_line(job(skill, object="car"), COCO80))
    assert error.code == ErrorCode.UNKNOWN_SKILL
    assert f"'{skill}'" in error.message
    assert "caption, detect, point, query" in error.message


@pytest.mark.parametrize(
    ("skill", "params"),
    [
        ("caption", {}),
        ("detect", {"object": "car"}),
        ("point", {"object": "car"}),
    ],
)
def test_several_images_are_only_for_query(skill: str, params: dict[str, Any]) -> None:
    error = error_of(plan_line(job(skill, images=2, **params), COCO80))
    assert error.code == ErrorCode.INVALID_REQUEST
    assert error.skill == skill
    assert "one image" in error.message
    assert "query" in error.message


def test_query_accepts_several_images() -> None:
    plan = plan_line(job("query", images=3, question="Same car?"), COCO80)
    assert isinstance(plan, VlmPlan) and plan.task.skill == "query"


def test_one_entry_in_images_counts_as_one_image() -> None:
    line = JobLine(
        index=0,
        id=None,
        skill="detect",
        images=[ImageInput(index=0, data=b"x")],
        params={"object": "car"},
    )
    assert plan_line(line, COCO80) == DetectorPlan(skill="detect", class_name="car")


# --- plan_line: field validation --------------------------------------------------------------

INVALID = [
    # caption
    ("caption", {"length": "medium"}, "'length' must be one of 'short', 'normal', 'long'"),
    ("caption", {"length": "Short"}, "'length' must be one of"),
    ("caption", {"length": 1}, "'length' must be one of"),
    # query
    ("query", {}, "missing required field 'question'"),
    ("query", {"question": ""}, "'question' must be a non-empty string"),
    ("query", {"question": "  "}, "'question' must be a non-empty string"),
    ("query", {"question": 42}, "'question' must be a non-empty string"),
    ("query", {"question": "Why?", "reasoning": "yes"}, "'reasoning' must be true or false"),
    ("query", {"question": "Why?", "reasoning": 1}, "'reasoning' must be true or false"),
    # detect / point
    ("detect", {}, "missing required field 'object'"),
    ("point", {}, "missing required field 'object'"),
    ("detect", {"object": ""}, "'object' must be a non-empty string"),
    ("point", {"object": " \n"}, "'object' must be a non-empty string"),
    ("detect", {"object": ["car"]}, "'object' must be a non-empty string"),
    ("detect", {"object": "c" * 501}, "'object' is longer than 500 characters"),
    ("detect", {"object": "car", "settings": {}}, "'settings' is only supported by caption"),
    ("point", {"object": "car", "settings": {"temperature": 0.5}}, "'settings' is only"),
    # settings
    ("caption", {"settings": [1]}, "'settings' must be an object"),
    ("caption", {"settings": {"temperature": -0.1}}, "'settings.temperature' must be a number"),
    ("caption", {"settings": {"temperature": 2.01}}, "'settings.temperature'"),
    ("caption", {"settings": {"temperature": True}}, "'settings.temperature'"),
    ("caption", {"settings": {"temperature": "0.5"}}, "'settings.temperature'"),
    ("query", {"question": "?", "settings": {"top_p": 0}}, "'settings.top_p' must be a number"),
    ("query", {"question": "?", "settings": {"top_p": 1.5}}, "'settings.top_p'"),
    ("query", {"question": "?", "settings": {"top_p": True}}, "'settings.top_p'"),
    ("caption", {"settings": {"max_tokens": 0}}, "'settings.max_tokens' must be an integer"),
    ("caption", {"settings": {"max_tokens": 4097}}, "from 1 to 4096"),
    ("caption", {"settings": {"max_tokens": 256.5}}, "'settings.max_tokens'"),
    ("caption", {"settings": {"max_tokens": True}}, "'settings.max_tokens'"),
]


@pytest.mark.parametrize(("skill", "params", "fragment"), INVALID)
def test_field_problems_are_invalid_request(
    skill: str, params: dict[str, Any], fragment: str
) -> None:
    error = error_of(plan_line(job(skill, **params), COCO80))
    assert error.code == ErrorCode.INVALID_REQUEST
    assert error.skill == skill
    assert error.message.startswith(f"{skill}: ")
    assert fragment in error.message


def test_field_validation_comes_before_the_missing_model() -> None:
    # A caption line that could never run still learns about its bad field first.
    error = error_of(plan_line(job("caption", length="huge"), COCO80))
    assert error.code == ErrorCode.INVALID_REQUEST


def test_every_bad_field_is_reported_at_once() -> None:
    settings = {"temperature": 3, "top_p": "high", "max_tokens": 1.0}
    error = error_of(plan_line(job("caption", length="tiny", settings=settings), COCO80))
    assert error.message == (
        "caption: 'length' must be one of 'short', 'normal', 'long'; "
        "'settings.temperature' must be a number from 0 to 2; "
        "'settings.top_p' must be a number greater than 0 and at most 1 (got a string); "
        "'settings.max_tokens' must be an integer from 1 to 4096 (got a float)"
    )


def test_a_message_names_the_wrong_type_never_the_value() -> None:
    error = error_of(plan_line(job("query", question=["secret-value"]), COCO80))
    assert error.message == "query: 'question' must be a non-empty string (got an array)"


LINE_MODELS = (CaptionLine, QueryLine, DetectLine, PointLine)


def test_the_union_covers_exactly_the_four_skills() -> None:
    tags = {get_args(model.model_fields["skill"].annotation)[0] for model in LINE_MODELS}
    assert tags == MOONDREAM_SKILLS


@pytest.mark.parametrize(
    ("skill", "params", "expected"),
    [
        ("caption", {}, CaptionLine(skill="caption", length="normal", settings=None)),
        (
            "caption",
            {"length": "long", "settings": {"temperature": 1, "max_tokens": None, "seed": 4}},
            CaptionLine(
                skill="caption", length="long", settings=GenerationSettings(temperature=1.0)
            ),
        ),
        ("query", {"question": "Why?"}, QueryLine(skill="query", question="Why?", reasoning=True)),
        (
            "query",
            {"question": "Why?", "reasoning": False, "reasoning_effort": "high"},
            QueryLine(skill="query", question="Why?", reasoning=False),
        ),
        ("detect", {"object": " car "}, DetectLine(skill="detect", object=" car ")),
        ("point", {"object": "dog", "settings": None}, PointLine(skill="point", object="dog")),
    ],
)
def test_typed_lines_carry_defaults_and_drop_nulls_and_extras(
    skill: str, params: dict[str, Any], expected: MoondreamLine
) -> None:
    assert typed_line(job(skill, **params)) == expected


# --- plan_line: lines that need a vision-language model ---------------------------------------

VALID_VLM_LINES = [
    ("caption", {}),
    ("caption", {"length": "short"}),
    ("caption", {"length": "long", "settings": {"temperature": 0, "top_p": 1, "max_tokens": 1}}),
    ("caption", {"length": None, "settings": None}),
    ("caption", {"settings": {"temperature": 2, "top_p": 0.001, "max_tokens": 4096}}),
    ("caption", {"settings": {"seed": 3}, "extra": "ignored"}),
    ("query", {"question": "What color is the car?"}),
    ("query", {"question": "What is this?", "reasoning": False}),
    ("query", {"question": "?", "reasoning": True, "settings": {"temperature": 0.7}}),
]


def vlm_plan(result: DetectorPlan | VlmPlan | ItemError) -> VlmPlan:
    assert isinstance(result, VlmPlan), result
    return result


@pytest.mark.parametrize(("skill", "params"), VALID_VLM_LINES)
def test_valid_caption_and_query_plan_the_vision_language_model(
    skill: str, params: dict[str, Any]
) -> None:
    plan = vlm_plan(plan_line(job(skill, **params), COCO80, "my-vlm"))
    assert plan.task.skill == skill
    assert plan.task.params["model"] == "my-vlm"
    assert not plan.together
    settings = {k: v for k, v in (params.get("settings") or {}).items() if k != "seed"}
    assert plan.task.params.get("settings", {}) == settings  # unknown keys are not passed on
    if skill == "query":
        assert plan.task.params["question"] == params["question"]
        assert plan.task.params["reasoning"] is params.get("reasoning", True)  # the page's default
        assert plan.reasoning is params.get("reasoning", True)
    else:
        assert plan.task.params["length"] == (params.get("length") or "normal")


def test_a_query_over_several_images_is_one_call_about_all_of_them() -> None:
    assert vlm_plan(plan_line(job("query", images=3, question="same?"), COCO80)).together
    assert not vlm_plan(plan_line(job("query", images=1, question="same?"), COCO80)).together


@pytest.mark.parametrize("skill", ["detect", "point"])
@pytest.mark.parametrize("target", ["door handle", "sky", "red sports car with stripes"])
def test_detect_and_point_outside_coco_plan_the_vision_language_model(
    skill: str, target: str
) -> None:
    plan = vlm_plan(plan_line(job(skill, object=f" {target} "), COCO80, "my-vlm"))
    assert plan.task == Task(skill, {"model": "my-vlm", "object": target})


def test_without_a_backend_the_message_names_the_object_and_why() -> None:
    plan = vlm_plan(plan_line(job("detect", object="q" * 500), COCO80))
    message = needs_vlm_message(plan, "no server configured")
    assert "q" * 100 in message and "q" * 101 not in message
    assert "not a COCO object class" in message and message.endswith("no server configured")
    caption = vlm_plan(plan_line(job("caption"), COCO80))
    assert needs_vlm_message(caption, "no server configured") == "caption: no server configured"


# --- plan_line: lines the detector runs -------------------------------------------------------


@pytest.mark.parametrize(
    ("skill", "target", "class_name"),
    [
        ("detect", "person", "person"),
        ("detect", "People", "person"),
        ("point", "cars", "car"),
        ("point", "  tv  ", "tv"),
        ("detect", "cell phones", "cell phone"),
    ],
)
def test_detect_and_point_on_coco_classes_plan_the_detector(
    skill: Literal["detect", "point"], target: str, class_name: str
) -> None:
    plan = plan_line(job(skill, object=target, extra={"ignored": True}), COCO80)
    assert plan == DetectorPlan(skill=skill, class_name=class_name)


def test_the_plan_names_the_label_lists_class() -> None:
    plan = plan_line(job("detect", object="persons"), ["Person"])
    assert plan == DetectorPlan(skill="detect", class_name="Person")


def test_a_null_settings_is_absent_on_detect() -> None:
    plan = plan_line(job("point", object="dog", settings=None), COCO80)
    assert plan == DetectorPlan(skill="point", class_name="dog")


# --- moondream_result -------------------------------------------------------------------------


def detection(label: str, box_normalized: list[float], class_id: int = 0) -> dict[str, Any]:
    return {
        "class_id": class_id,
        "label": label,
        "score": 0.9,
        "box": [value * 100 for value in box_normalized],  # pixels of a 100 x 100 image
    }


DETECT_OUTPUT: dict[str, Any] = {
    "model": "yolox-nano",
    "objects": [
        detection("car", [0.1, 0.2, 0.3, 0.6], 2),
        detection("person", [0.5, 0.5, 0.7, 0.9], 0),
        detection("car", [0.6, 0.0, 1.0, 0.25], 2),
        detection("cart", [0.0, 0.0, 0.1, 0.1], 99),
    ],
}


def test_detect_gives_the_normalised_boxes_of_the_class_in_order() -> None:
    result = moondream_result(DetectorPlan("detect", "car"), DETECT_OUTPUT, 100, 100)
    assert result == {
        "objects": [
            {"x_min": 0.1, "y_min": 0.2, "x_max": 0.3, "y_max": 0.6},
            {"x_min": 0.6, "y_min": 0.0, "x_max": 1.0, "y_max": 0.25},
        ]
    }


def test_point_gives_the_box_centres_of_the_class_in_order() -> None:
    result = moondream_result(DetectorPlan("point", "car"), DETECT_OUTPUT, 100, 100)
    assert result == {"points": [{"x": 0.2, "y": 0.4}, {"x": 0.8, "y": 0.125}]}


def test_other_classes_are_left_out() -> None:
    result = moondream_result(DetectorPlan("point", "person"), DETECT_OUTPUT, 100, 100)
    assert result == {"points": [{"x": 0.6, "y": 0.7}]}


def test_no_matching_objects_give_empty_lists() -> None:
    assert moondream_result(DetectorPlan("detect", "dog"), DETECT_OUTPUT, 100, 100) == {
        "objects": []
    }
    assert moondream_result(DetectorPlan("point", "dog"), DETECT_OUTPUT, 100, 100) == {"points": []}
    empty: dict[str, Any] = {"model": "yolox-nano", "objects": []}
    assert moondream_result(DetectorPlan("detect", "car"), empty, 100, 100) == {"objects": []}


def test_coordinates_stay_inside_the_image() -> None:
    output = {"model": "m", "objects": [detection("dog", [-0.02, 0.5, 1.03, 1.2])]}
    boxes = moondream_result(DetectorPlan("detect", "dog"), output, 100, 100)
    points = moondream_result(DetectorPlan("point", "dog"), output, 100, 100)
    assert boxes == {"objects": [{"x_min": 0.0, "y_min": 0.5, "x_max": 1.0, "y_max": 1.0}]}
    assert points == {"points": [{"x": 0.5, "y": 0.75}]}


def test_results_are_json_serialisable() -> None:
    result = moondream_result(DetectorPlan("detect", "car"), DETECT_OUTPUT, 100, 100)
    assert json.loads(json.dumps(result)) == result


# --- ids: "any" on the page -----------------------------------------------------------------


def moondream_line(raw: bytes) -> JobLine | LineError:
    """`raw` as chunk processing parses it for a Moondream batch (its id rule)."""
    jobs = MoondreamJobs()
    return parse_line(0, raw, LIMITS, skills=MOONDREAM_SKILLS, id_problem=jobs.check_id)


@pytest.mark.parametrize(
    "raw_id",
    ["a", "", 0, -3, 2**80, 2.5, True, False, [], {}, [None, {"k": [1.5, "x"]}], {"a": {"b": {}}}],
    ids=repr,
)
def test_any_json_id_is_kept_as_sent(raw_id: Any) -> None:
    line = moondream_line(json.dumps({"id": raw_id, "skill": "detect", "image": PNG_B64}).encode())
    assert isinstance(line, JobLine), line
    assert line.sent_id == raw_id and type(line.sent_id) is type(raw_id)
    # the text form (ImageInput.client_id) is the string itself, else the id's JSON text
    expected = raw_id if isinstance(raw_id, str) else json.dumps(raw_id)
    assert line.id == expected
    assert line.images[0].client_id == expected


def test_a_null_id_is_no_id() -> None:
    line = moondream_line(json.dumps({"id": None, "skill": "point", "image": PNG_B64}).encode())
    assert isinstance(line, JobLine)
    assert (line.id, line.sent_id) == (None, None)


@pytest.mark.parametrize("text", ["1e400", "-1e400", '[1, {"a": [2e999]}]'])
def test_an_id_holding_a_number_beyond_floats_is_refused(text: str) -> None:
    raw = b'{"id": ' + text.encode() + b', "skill": "detect", "image": "' + PNG_B64.encode() + b'"}'
    line = moondream_line(raw)
    assert isinstance(line, LineError), line
    assert line.code == ErrorCode.INVALID_REQUEST
    assert "'id'" in line.message
    assert line.sent_id is None  # nothing unencodable reaches the result line


def test_an_unknown_skill_line_still_echoes_its_id() -> None:
    # The id is read before the skill: an unknown skill still echoes the id.
    line = moondream_line(json.dumps({"id": {"n": 1}, "skill": "ocr", "image": PNG_B64}).encode())
    assert isinstance(line, LineError)
    assert line.code == ErrorCode.UNKNOWN_SKILL
    assert line.sent_id == {"n": 1}
