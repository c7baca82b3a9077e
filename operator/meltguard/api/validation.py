"""Turning pydantic's errors into messages a platform engineer can act on.

Every error names the object, the field path as written in YAML
(``spec.quotas.tiers[1].floor``) and what is wrong, in words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from meltguard.api.durations import DURATION_PATTERN
from meltguard.api.fields import DNS_LABEL_PATTERN, DNS_SUBDOMAIN_PATTERN
from meltguard.api.models import ImageQuotaPolicy, PolicySpec

_PATTERN_WORDS = {
    DNS_LABEL_PATTERN: "a DNS label (lowercase letters, digits and '-', at most 63)",
    DNS_SUBDOMAIN_PATTERN: "a DNS name (lowercase letters, digits, '-' and '.')",
}


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem in one field."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class PolicyInvalid(ValueError):
    """An ImageQuotaPolicy (or its spec) that breaks the contract; ``errors`` says where."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = tuple(errors)
        super().__init__("; ".join(str(error) for error in self.errors))


def field_path(location: Sequence[int | str], prefix: str = "") -> str:
    """``("spec", "quotas", "tiers", 1, "floor")`` -> ``spec.quotas.tiers[1].floor``."""
    path = prefix
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path or "(object)"


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown field (not part of ImageQuotaPolicy v1alpha1)"
    if kind == "missing":
        return "required field is missing"
    if kind == "string_pattern_mismatch":
        return _pattern_message(error["input"], str(error.get("ctx", {}).get("pattern", "")))
    return str(error["msg"]).removeprefix("Value error, ")


def _pattern_message(value: object, pattern: str) -> str:
    """Say in words what a pattern wants."""
    if pattern == DURATION_PATTERN:
        return (f"{value!r} is not a duration: write a positive whole number followed by"
                " s, m, h or d (e.g. 90s, 30m, 3h, 24h, 1d)")
    wanted = _PATTERN_WORDS.get(pattern, f"the form {pattern}")
    return f"{value!r} is not {wanted}"


def _location(error: ErrorDetails) -> list[int | str]:
    location = list(error["loc"])
    sub_field = error.get("ctx", {}).get("field")
    if sub_field:
        location.extend(_split_camel_path(str(sub_field)))
    return location


def _split_camel_path(path: str) -> list[int | str]:
    """``tiers[1].name`` -> ``["tiers", 1, "name"]``."""
    parts: list[int | str] = []
    for piece in path.split("."):
        name, _, index = piece.partition("[")
        parts.append(name)
        if index:
            parts.append(int(index.rstrip("]")))
    return parts


def field_errors(error: ValidationError, prefix: str = "") -> list[FieldError]:
    """Every problem pydantic found, as field paths and messages."""
    return [
        FieldError(field_path(_location(detail), prefix), _message(detail))
        for detail in error.errors(include_url=False)
    ]


def parse_spec(spec: Any) -> PolicySpec:
    """Validate a policy's ``spec``; raises :class:`PolicyInvalid` with ``spec.``-rooted paths."""
    if not isinstance(spec, Mapping):
        raise PolicyInvalid([FieldError("spec", "must be a mapping (an object)")])
    try:
        return PolicySpec.model_validate(spec)
    except ValidationError as error:
        raise PolicyInvalid(field_errors(error, "spec")) from None


def parse_policy(obj: Any) -> ImageQuotaPolicy:
    """Validate a whole ImageQuotaPolicy object; raises :class:`PolicyInvalid`."""
    if not isinstance(obj, Mapping):
        raise PolicyInvalid([FieldError("(object)", "must be a mapping (an object)")])
    try:
        return ImageQuotaPolicy.model_validate(obj)
    except ValidationError as error:
        raise PolicyInvalid(field_errors(error)) from None
