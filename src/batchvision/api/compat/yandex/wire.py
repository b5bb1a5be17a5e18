"""The batchAnalyze request as it arrives on the wire: pydantic models of the
`yandex.cloud.ai.vision.v1` messages, read as a proto3 JSON parser reads them.

Message and field layout, limits and enum numbers follow `yandex/cloud/ai/vision/v1/
vision_service.proto` in github.com/yandex-cloud/cloudapi (`BatchAnalyzeRequest`, `AnalyzeSpec`,
`Feature`, `FeatureTextDetectionConfig`, `FeatureClassificationConfig`); the documented limits come
from the seed page (../shared/seeds/004).

proto3 JSON rules kept here (as protobuf's own JSON parsers apply them):
- a field may be spelled in lowerCamelCase (`analyzeSpecs`) or as in the proto (`analyze_specs`);
  both spellings of one field in one object is an error (the parsers refuse a field set twice);
- `null` means "not set" (the field's default);
- an enum is its name (`"TEXT_DETECTION"`) or its number (`1`);
- of a `oneof` (`content` / `signature`, `textDetectionConfig` / `classificationConfig`) at most one
  member may be set; unknown fields are ignored.

Structural problems raise `BatchVisionError(INVALID_REQUEST)` with every problem's field path in
lowerCamelCase (`analyzeSpecs.0.features.0.textDetectionConfig.languageCodes: ...`). What the
request asks for but batchvision does not serve (another feature type, an unknown enum value, a
`signature` source) is not a structural problem: the router answers it per spec or per feature.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from batchvision.core.errors import BatchVisionError, ErrorCode, describe_problems

MAX_SPECS = 8
MAX_FEATURES = 8
MAX_LANGUAGES = 8
MAX_LANGUAGE_CODE = 3
MAX_CONTENT_CHARS = 1_048_576  # checked per spec by the router: too long fails that spec only
MAX_FOLDER_ID = 50
MAX_SIGNATURE = 16_384
MAX_MIME_TYPE = 255
MAX_TEXT_MODEL = 50
MAX_CLASSIFICATION_MODEL = 256
MAX_PROBLEMS_SHOWN = 10
_INT32 = (-(2**31), 2**31 - 1)


class FeatureType(IntEnum):
    """`Feature.Type`, numbered as in cloudapi's yandex/cloud/ai/vision/v1/vision_service.proto."""

    TYPE_UNSPECIFIED = 0
    TEXT_DETECTION = 1
    CLASSIFICATION = 2
    FACE_DETECTION = 3
    IMAGE_COPY_SEARCH = 4


def _field_error(field: str, message: str) -> PydanticCustomError:
    """An error about one field of the object being validated (its path gains `field`)."""
    return PydanticCustomError("field_problem", message, {"field": field})


class ProtoMessage(BaseModel):
    """A message read by proto3 JSON rules: either field spelling, `null` as unset."""

    model_config = ConfigDict(alias_generator=to_camel, strict=True, extra="ignore", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _one_spelling_each(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data  # pydantic reports the wrong type
        fields = {key: value for key, value in data.items() if value is not None}
        for name, info in cls.model_fields.items():
            json_name = info.alias or name
            if name == json_name or name not in fields:
                continue
            if json_name in fields:
                raise _field_error(json_name, f"set twice, as {json_name} and {name}; send one")
            fields[json_name] = fields.pop(name)
        return fields

    @staticmethod
    def _at_most_one(**members: object) -> None:
        given = [name for name, value in members.items() if value is not None]
        if len(given) > 1:
            raise _field_error(given[1], f"only one of {' and '.join(given)} may be set")


def _enum_value(value: Any) -> str | int:
    """An enum as proto3 JSON writes it: its name, or its number (an int32, never a bool)."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and _INT32[0] <= value <= _INT32[1]:
        return value
    raise PydanticCustomError("enum_value", "Input should be an enum name or an int32 number")


LanguageCode = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LANGUAGE_CODE)]
EnumValue = Annotated[str | int, PlainValidator(_enum_value)]


class TextDetectionConfig(ProtoMessage):
    """`FeatureTextDetectionConfig`. `model` (`page` or `line`) is accepted and not used."""

    language_codes: list[LanguageCode] = Field(min_length=1, max_length=MAX_LANGUAGES)
    model: str = Field("", max_length=MAX_TEXT_MODEL)


class ClassificationConfig(ProtoMessage):
    """`FeatureClassificationConfig`, read so a CLASSIFICATION feature parses (then errs alone)."""

    model: str = Field("", max_length=MAX_CLASSIFICATION_MODEL)


class Feature(ProtoMessage):
    type: EnumValue
    text_detection_config: TextDetectionConfig | None = None
    classification_config: ClassificationConfig | None = None

    @model_validator(mode="after")
    def _one_config(self) -> Feature:
        self._at_most_one(
            textDetectionConfig=self.text_detection_config,
            classificationConfig=self.classification_config,
        )
        return self

    @property
    def known_type(self) -> FeatureType | None:
        """The type named or numbered, or None for a name or number the proto does not have."""
        if isinstance(self.type, str):
            return FeatureType.__members__.get(self.type)
        return FeatureType(self.type) if self.type in FeatureType._value2member_map_ else None


class AnalyzeSpec(ProtoMessage):
    """One image (`content`, base64; or a `signature`) and what to do with it. `mimeType` is
    accepted and not used: the bytes themselves say whether they are JPEG or PNG."""

    content: str | None = None
    signature: str | None = Field(None, max_length=MAX_SIGNATURE)
    features: list[Feature] = Field(min_length=1, max_length=MAX_FEATURES)
    mime_type: str = Field("", max_length=MAX_MIME_TYPE)

    @model_validator(mode="after")
    def _one_source(self) -> AnalyzeSpec:
        if self.content is None and self.signature is None:
            raise _field_error("content", "Field required")
        self._at_most_one(content=self.content, signature=self.signature)
        return self


class BatchAnalyzeRequest(ProtoMessage):
    analyze_specs: list[AnalyzeSpec] = Field(min_length=1, max_length=MAX_SPECS)
    folder_id: str = Field("", max_length=MAX_FOLDER_ID)


_OBJECT_TYPES = frozenset({"model_type", "model_attributes_type", "dict_type"})


def _client_problem(error: Mapping[str, Any]) -> dict[str, Any]:
    """One pydantic error in the wire's terms: JSON words, the offending field in the path."""
    problem = dict(error)
    if error["type"] in _OBJECT_TYPES:
        problem["msg"] = "Input should be a JSON object"
    field = (error.get("ctx") or {}).get("field")
    if error["type"] == "field_problem" and field:
        problem["loc"] = (*error["loc"], field)
    return problem


def problems_message(exc: ValidationError) -> str:
    """Every problem as "field.path: reason", the first few of a long list."""
    problems = [_client_problem(e) for e in exc.errors(include_input=False, include_url=False)]
    message = describe_problems(problems[:MAX_PROBLEMS_SHOWN], where="body")
    hidden = len(problems) - MAX_PROBLEMS_SHOWN
    return f"{message}; and {hidden} more" if hidden > 0 else message


def parse_request(body: Any) -> BatchAnalyzeRequest:
    """A parsed JSON body as a `BatchAnalyzeRequest`, or INVALID_REQUEST naming each problem."""
    try:
        return BatchAnalyzeRequest.model_validate(body)
    except ValidationError as exc:
        raise BatchVisionError(ErrorCode.INVALID_REQUEST, problems_message(exc)) from None
