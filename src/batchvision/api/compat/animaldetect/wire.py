"""The batch-detect request as pydantic models (../shared/seeds/000; the choices are in the
router's docstring). The same fields come as multipart form text or as JSON values, so numbers
and booleans take their text as well as the JSON value."""

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    model_validator,
)
from pydantic_core import PydanticCustomError

from batchvision.skills.animals import Profile

_PARAMS = ("threshold", "country", "classify", "smooth_herd")  # the animals skill's
_AREA_HINT = ("latitude", "longitude")
_FLAGS = {"true": True, "1": True, "false": False, "0": False}
AREA_HINT_IGNORED = (
    "ignored: the area hint is used only when latitude, longitude and country are all sent"
)


def _flag_text(value: Any) -> Any:
    """`true`/`false`/`1`/`0` in any case, as text (a form field) or the JSON value."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, str | int) else None
    if text not in _FLAGS:
        raise PydanticCustomError("flag", "must be true, false, 1 or 0")
    return _FLAGS[text]


def _not_a_flag(value: Any) -> Any:
    if isinstance(value, bool):  # bool is an int to Python, never a number to a client
        raise PydanticCustomError("float_type", "must be a number, not true or false")
    return value


Flag = Annotated[bool, BeforeValidator(_flag_text)]
# Decimal text or a JSON number (nan and infinities refused). The range comes before the
# validator so that OpenAPI shows it as minimum/maximum.
Threshold = Annotated[
    float, Field(ge=0.01, le=0.99, allow_inf_nan=False), BeforeValidator(_not_a_flag)
]
Latitude = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False), BeforeValidator(_not_a_flag)]
Longitude = Annotated[
    float, Field(ge=-180, le=180, allow_inf_nan=False), BeforeValidator(_not_a_flag)
]


class BatchFields(BaseModel):
    """Every field but `images`. Unknown fields are ignored (a drop-in must tolerate a client's
    extras); `profile` and `model` are not fields: the route decides them."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    threshold: Threshold | None = None  # default: the skill's 0.2
    country: StrictStr | None = None  # CCA2, CCA3 or a name; the animals skill normalises it
    latitude: Latitude | None = None
    longitude: Longitude | None = None
    classify: Flag | None = None
    smooth_herd: Flag | None = None
    metadata: Flag = False

    @model_validator(mode="before")
    @classmethod
    def _drop_unsent(cls, fields: Any) -> Any:
        # `null` and an empty form field mean "not sent" (the default applies).
        if not isinstance(fields, dict):
            return fields
        return {name: value for name, value in fields.items() if value is not None and value != ""}

    @model_validator(mode="after")
    def _area_hint_pairs(self) -> Self:
        # Half a point with a country would be used if it were whole: a client mistake to name.
        if self.country is not None and (self.latitude is None) != (self.longitude is None):
            raise PydanticCustomError(
                "area_hint", "latitude and longitude must be sent together (with country)"
            )
        return self

    def animals_params(self, profile: Profile) -> dict[str, Any]:
        """The animals skill's params; latitude/longitude only when they are used."""
        used = {*_PARAMS, *_AREA_HINT} if self.country is not None else set(_PARAMS)
        return {**self.model_dump(include=used, exclude_none=True), "profile": profile}

    def notes(self) -> list[str]:
        """What was sent but had no effect, for the response's `info.notes`."""
        sent = self._area_hint()
        if self.country is not None or not sent:
            return []
        return [f"{' and '.join(sent)} {AREA_HINT_IGNORED}"]

    def _area_hint(self) -> list[str]:
        return [name for name in _AREA_HINT if getattr(self, name) is not None]


class JsonBatch(BatchFields):
    # Base64 strings (or data: URIs), decoded one by one once their count is checked.
    images: list[StrictStr]
