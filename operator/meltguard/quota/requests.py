"""The API's request bodies and query: strict models whose errors name the bad field."""

from __future__ import annotations

import contextlib
import json
import unicodedata
from functools import cache
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

#: Longest subject and request id, in UTF-8 bytes.
MAX_ID_BYTES = 256
#: Largest cost of one request; a cost above any sane limit is a client bug, not a request.
MAX_COST = 1_000_000
#: Largest request body accepted, in bytes.
MAX_BODY_BYTES = 64 * 1024


def _identifier(value: str) -> str:
    """Check a subject or request id: 1..256 UTF-8 bytes, no control characters."""
    plain = value.isascii() and value.isprintable()  # the usual case, checked in C
    if plain:
        size = len(value)
    else:
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode (no lone surrogates)") from None
    if size > MAX_ID_BYTES:
        raise ValueError(f"must be at most {MAX_ID_BYTES} bytes in UTF-8, got {size}")
    if not plain:
        for index, char in enumerate(value):
            if unicodedata.category(char) == "Cc":
                message = f"must not contain control characters (U+{ord(char):04X} at {index})"
                raise ValueError(message)
    return value


Identifier = Annotated[str, Field(min_length=1), AfterValidator(_identifier)]
Name = Annotated[str, Field(min_length=1, max_length=317)]


class _Request(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, alias_generator=to_camel, populate_by_name=True
    )

    policy: Name
    tier: Name
    subject: Identifier


class ConsumeRequest(_Request):
    """``POST /v1/consume``: take ``cost`` units; ``requestId`` makes retries safe."""

    cost: Annotated[int, Field(ge=1, le=MAX_COST)] = 1
    request_id: Identifier | None = None


class RefundRequest(_Request):
    """``POST /v1/refund``: give back what ``requestId`` took."""

    request_id: Identifier


class PeekRequest(_Request):
    """``GET /v1/quota``: the query string's policy, tier and subject."""


class DemandQuery(BaseModel):
    """``GET /v1/demand``: the query string's policy."""

    model_config = _Request.model_config

    policy: Name


class BadRequest(ValueError):
    """A request that is refused before any counter is touched; ``field`` names the culprit."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


@cache
def _quoted_keys(model: type[BaseModel]) -> tuple[bytes, ...]:
    """Every key ``model`` accepts (alias and field name), as it appears quoted in JSON."""
    names = set(model.model_fields) | {
        info.alias for info in model.model_fields.values() if info.alias is not None
    }
    return tuple(json.dumps(name).encode() for name in sorted(names))


def _first_repeated(pairs: list[tuple[str, object]]) -> list[tuple[str, object]]:
    """``json.loads`` hook: the pairs of one object, unless a key repeats."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise BadRequest(key, f"key {key} is given more than once in the body")
        seen.add(key)
    return pairs


def refuse_duplicate_keys(raw: bytes, model: type[BaseModel]) -> None:
    """Raise :class:`BadRequest` naming a key that ``raw`` gives twice.

    JSON parsers, pydantic's included, keep the last of repeated keys, so
    ``"cost":1,"cost":3`` would silently charge 3. Without escapes every key appears
    literally, so a body in which each accepted key is quoted at most once cannot repeat
    one (unknown keys are refused by the model anyway); only the rest is parsed again.
    """
    if b"\\" not in raw and max(map(raw.count, _quoted_keys(model))) <= 1:
        return
    with contextlib.suppress(json.JSONDecodeError, UnicodeDecodeError):  # the model says why
        json.loads(raw, object_pairs_hook=_first_repeated)


def bad_request_from(error: ValidationError) -> BadRequest:
    """The first problem of a pydantic error, as a :class:`BadRequest` naming its field."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "body"
    if first["type"] == "json_invalid":
        return BadRequest("body", f"body is not valid JSON: {first['ctx'].get('error', '')}")
    if first["type"] == "model_type":
        return BadRequest("body", "body must be a JSON object")
    return BadRequest(field, f"{field}: {first['msg']}")
