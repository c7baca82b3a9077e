"""The API's request bodies and query: strict models whose errors name the bad field."""

from __future__ import annotations

import unicodedata
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


class BadRequest(ValueError):
    """A request that is refused before any counter is touched; ``field`` names the culprit."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


def bad_request_from(error: ValidationError) -> BadRequest:
    """The first problem of a pydantic error, as a :class:`BadRequest` naming its field."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "body"
    if first["type"] == "json_invalid":
        return BadRequest("body", f"body is not valid JSON: {first['ctx'].get('error', '')}")
    if first["type"] == "model_type":
        return BadRequest("body", "body must be a JSON object")
    return BadRequest(field, f"{field}: {first['msg']}")
