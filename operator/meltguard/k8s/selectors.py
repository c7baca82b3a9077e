"""Label selectors matched in memory, as the API server would match them.

The watch caches hold every pod of a namespace; a tick picks its target's pods by the
target's selector, given either as a ``LabelSelector`` (a Deployment's ``spec.selector``) or
as the string the scale subresource shows (``app=worker,tier in (a,b)``). Both become the
same :data:`Selector`: a tuple of requirements that must all hold.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]

_SET = re.compile(r"^(?P<key>[^\s!=(),]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_EQUALITY = re.compile(r"^(?P<key>[^\s!=(),]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s!=(),]*)$")
_KEY = re.compile(r"^(?P<bang>!?)\s*(?P<key>[^\s!=(),]+)$")


class SelectorInvalid(ValueError):
    """A label selector that does not parse; the message names the part."""


@dataclass(frozen=True, slots=True)
class Requirement:
    """One term of a selector: ``key`` and an operator over ``values``."""

    key: str
    operator: Operator
    values: frozenset[str] = frozenset()

    def holds(self, labels: Mapping[str, str]) -> bool:
        """Whether a pod with ``labels`` meets this term."""
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        if self.operator == "In":
            return labels.get(self.key) in self.values
        return labels.get(self.key) not in self.values  # NotIn: also when the label is absent


Selector = tuple[Requirement, ...]


def matches(selector: Selector, labels: Mapping[str, str]) -> bool:
    """Every requirement holds (an empty selector matches everything)."""
    return all(requirement.holds(labels) for requirement in selector)


def _terms(text: str) -> Iterable[str]:
    """The comma-separated terms, commas inside ``(...)`` kept."""
    depth, start = 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            yield text[start:index].strip()
            start = index + 1
    yield text[start:].strip()


def _term(term: str) -> Requirement:
    if found := _SET.match(term):
        values = frozenset(value.strip() for value in found["values"].split(","))
        return Requirement(found["key"], "In" if found["op"] == "in" else "NotIn", values)
    if found := _EQUALITY.match(term):
        return Requirement(found["key"], "NotIn" if found["op"] == "!=" else "In",
                           frozenset({found["value"]}))
    if found := _KEY.match(term):
        return Requirement(found["key"], "DoesNotExist" if found["bang"] else "Exists")
    raise SelectorInvalid(f"label selector term {term!r} does not parse")


def parse_selector(text: str) -> Selector:
    """``app=worker,tier in (a,b),!canary`` as requirements; :class:`SelectorInvalid`
    naming the term that does not parse."""
    if not text.strip():
        return ()
    return tuple(_term(term) for term in _terms(text))


def selector_of(label_selector: Mapping[str, Any] | None) -> Selector:
    """A ``LabelSelector`` (``matchLabels``, ``matchExpressions``) as requirements."""
    if not label_selector:
        return ()
    labels = label_selector.get("matchLabels") or {}
    requirements = [Requirement(key, "In", frozenset({str(value)}))
                    for key, value in sorted(labels.items())]
    for expression in label_selector.get("matchExpressions") or []:
        operator = expression.get("operator")
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise SelectorInvalid(f"matchExpressions operator {operator!r} is not one of "
                                  f"In, NotIn, Exists, DoesNotExist")
        requirements.append(Requirement(str(expression.get("key")), operator,
                                        frozenset(map(str, expression.get("values") or ()))))
    return tuple(requirements)
