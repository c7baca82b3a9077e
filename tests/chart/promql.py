"""Metric names used in a PromQL expression, without a full PromQL parser.

Good enough for the chart's own alerts and dashboard: strings, label matchers, ranges,
grouping label lists, Grafana variables, function names and keywords are removed before the
remaining identifiers are read as metric names.
"""

from __future__ import annotations

import re

KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "atan2",
        "inf",
        "nan",
    }
)
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
BRACES = re.compile(r"\{[^{}]*\}")
BRACKETS = re.compile(r"\[[^\[\]]*\]")
GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
FUNCTION_CALL = re.compile(r"\b[a-zA-Z_][a-zA-Z0-9_]*\s*\(")
NAME_MATCHER = re.compile(r'__name__\s*=\s*"([^"]+)"')
IDENTIFIER = re.compile(r"(?<![\w.])[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects, e.g. {"up"} for ``absent(up{job="x"} == 1)``."""
    by_matcher = set(NAME_MATCHER.findall(expr))
    text = STRING.sub(" ", expr)
    text = GRAFANA_VARIABLE.sub(" ", text)
    text = BRACES.sub(" ", text)
    text = BRACKETS.sub(" ", text)
    text = GROUPING.sub(" ", text)
    text = FUNCTION_CALL.sub(" ", text)
    selected = {name for name in IDENTIFIER.findall(text) if name.lower() not in KEYWORDS}
    return selected | by_matcher
