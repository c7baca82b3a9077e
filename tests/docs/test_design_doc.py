"""docs/design.md names exactly what the code has, in both directions.

Checked: metric families (the registries every part serves), alerts (the rendered chart),
the flags of every ``meltguard`` subcommand (its real argparse parser), every field path of
the CRD's schema as the models generate it, the quota service's routes (its OpenAPI
document) and the printer columns. The doc's conventions make this possible: field paths,
flags, routes and column names are written in backticks, field paths in full with ``[]`` for
list items.
"""

from __future__ import annotations

import argparse
import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pytest
import yaml

from meltguard.api.crd import render_crd
from meltguard.cli import build_parser
from meltguard.quota.openapi import OPENAPI_DOCUMENT
from tests.chart.helm import REPO_ROOT, Helm, find_tool
from tests.chart.monitoring import alert_rules, rendered_rule_groups
from tests.chart.test_metric_names import exported_names

DESIGN = REPO_ROOT / "docs" / "design.md"
ARCHITECTURE = REPO_ROOT / "docs" / "architecture.md"
PACKAGE = REPO_ROOT / "operator" / "meltguard"

SPAN = re.compile(r"`([^`\n]+)`")
HEADING = re.compile(r"^(#{1,6}) (.+?)\s*$", re.M)
METRIC = re.compile(r"\bmeltguard_[a-z0-9_]*[a-z0-9]\b")
ALERT = re.compile(r"\bMeltguard[A-Z][A-Za-z]*\b")
#: a flag starts a code span or follows a space, "(" or ","
FLAG = re.compile(r"(?<![^\s(,])--?[A-Za-z][\w-]*")
FIELD_PATH = re.compile(r"(?:spec|status)(?:\.[A-Za-z]+(?:\[\d*\])?)+")
ROUTE = re.compile(r"(GET|POST|PUT|PATCH|DELETE) (/\S*)")
COLUMN = re.compile(r"[A-Z][\w-]*")
MODULE_PATH = re.compile(r"[a-z0-9_]+(?:/[a-z0-9_]+)*(?:\.py|/)")
MODULE_FILE = re.compile(r"\b[a-z0-9_]+\.py\b")
HELP_FLAGS = frozenset({"-h", "--help"})
COMMAND_HEADING = re.compile(r"`meltguard ([\w-]+)`")
QUOTA_API_HEADING = "The quota HTTP API"
PRINTER_COLUMNS_HEADING = "Printer columns"


def spans(text: str) -> list[str]:
    """Every inline code span of ``text``."""
    return SPAN.findall(text)


def sections(text: str, level: int) -> dict[str, str]:
    """Heading -> body for the headings of ``level``; a body ends at the next heading of that
    level or above."""
    headings = list(HEADING.finditer(text))
    found = {}
    for index, heading in enumerate(headings):
        if len(heading.group(1)) != level:
            continue
        end = next((later.start() for later in headings[index + 1:]
                    if len(later.group(1)) <= level), len(text))
        found[heading.group(2)] = text[heading.end():end]
    return found


def two_way(named: Iterable[str], real: Iterable[str], what: str) -> list[str]:
    """What the code has that the doc does not name, and what the doc names that does not exist."""
    named, real = set(named), set(real)
    return ([f"{what} {name} exists but docs/design.md does not name it"
             for name in sorted(real - named)]
            + [f"docs/design.md names {what} {name}, which does not exist"
               for name in sorted(named - real)])


def command_flags() -> dict[str, frozenset[str]]:
    """Subcommand -> every option string of its real parser (help aside)."""
    parser = build_parser()
    commands = next(action for action in parser._actions
                    if isinstance(action, argparse._SubParsersAction))
    return {
        name: frozenset(option for action in sub._actions
                        if not isinstance(action, argparse._HelpAction)
                        for option in action.option_strings)
        for name, sub in commands.choices.items()
    }


def flags_in(text: str) -> set[str]:
    return {flag for span in spans(text) for flag in FLAG.findall(span)}


def command_sections(text: str) -> dict[str, str]:
    """Subcommand -> the body of its ``### `meltguard NAME``` section."""
    return {match.group(1): body for title, body in sections(text, 3).items()
            if (match := COMMAND_HEADING.fullmatch(title))}


def flag_problems(text: str) -> list[str]:
    """Each command's section names exactly its flags; flags named elsewhere exist."""
    known = command_flags()
    documented = command_sections(text)
    problems = two_way(documented, known, "the command")
    for command, body in documented.items():
        problems += two_way(flags_in(body) - HELP_FLAGS, known.get(command, ()),
                            f"a flag of meltguard {command}:")
        text = text.replace(body, "")
    every_flag = frozenset().union(*known.values()) | HELP_FLAGS
    problems += [f"docs/design.md names the flag {flag} outside the command sections, and no "
                 f"command has it" for flag in sorted(flags_in(text) - every_flag)]
    return problems


def schema_paths(schema: Mapping[str, Any], path: str) -> Iterator[str]:
    """``path`` and every field path below it; list items are written ``[]``."""
    yield path
    if schema.get("type") == "array":
        schema, path = schema["items"], path + "[]"
    for name, child in (schema.get("properties") or {}).items():
        yield from schema_paths(child, f"{path}.{name}")


@functools.cache
def crd_version() -> dict[str, Any]:
    """The served version of the CRD as the models generate it (tests/api keeps crds/ equal)."""
    crd = yaml.safe_load(render_crd())
    version: dict[str, Any] = crd["spec"]["versions"][0]
    return version


def crd_field_paths() -> set[str]:
    """Every field path below ``spec`` and ``status`` of the CRD's openAPIV3Schema."""
    properties = crd_version()["schema"]["openAPIV3Schema"]["properties"]
    return {path for root in ("spec", "status")
            for path in schema_paths(properties[root], root) if path != root}


def field_paths_in(text: str) -> set[str]:
    """Field paths the doc names, ``tiers[1]`` read as ``tiers[]``."""
    paths = set()
    for span in spans(text):
        if match := FIELD_PATH.match(span):
            paths.add(re.sub(r"\[\d+\]", "[]", match.group()))
    return paths


def field_problems(text: str) -> list[str]:
    return two_way(field_paths_in(text), crd_field_paths(), "the field")


def route_problems(text: str) -> list[str]:
    """The quota API section lists exactly the routes of the service's OpenAPI document."""
    body = sections(text, 2).get(QUOTA_API_HEADING, "")
    named = {" ".join(match.groups()) for span in spans(body)
             if (match := ROUTE.fullmatch(span))}
    real = {f"{method.upper()} {path}" for path, operations in OPENAPI_DOCUMENT["paths"].items()
            for method in operations}
    return two_way(named, real, "the quota route")


def column_problems(text: str) -> list[str]:
    body = sections(text, 3).get(PRINTER_COLUMNS_HEADING, "")
    named = {span for span in spans(body) if COLUMN.fullmatch(span)}
    real = {column["name"] for column in crd_version()["additionalPrinterColumns"]}
    return two_way(named, real, "the printer column")


def metric_problems(text: str, served: Iterable[str]) -> list[str]:
    return two_way(METRIC.findall(text), served, "the metric family")


def alert_problems(text: str, alerts: Iterable[str]) -> list[str]:
    return two_way(ALERT.findall(text), alerts, "the alert")


@pytest.fixture(scope="module")
def design() -> str:
    return DESIGN.read_text()


@pytest.fixture(scope="module")
def served_metrics() -> frozenset[str]:
    """Family names (as queried) of every part's registry: operator, exporter, quota service."""
    names, missing = exported_names()
    assert not missing, ("tests/chart/test_metric_names.py lists metric modules that do not "
                         f"exist: {missing}")
    return names


@pytest.fixture(scope="module")
def alert_names() -> frozenset[str]:
    """The alerts of the rendered chart's PrometheusRule."""
    binary = find_tool("helm")
    if binary is None:
        pytest.skip("helm not found in .tools/ or on PATH: run scripts/fetch-tools.sh")
    return frozenset(rule["alert"] for rule in alert_rules(rendered_rule_groups(Helm(binary))))


def test_every_metric_family_served_is_named_and_no_other(design: str,
                                                          served_metrics: frozenset[str]) -> None:
    assert len(served_metrics) > 20
    assert metric_problems(design, served_metrics) == []


def test_every_alert_of_the_chart_is_named_and_no_other(design: str,
                                                        alert_names: frozenset[str]) -> None:
    assert alert_names
    assert alert_problems(design, alert_names) == []


def test_every_flag_of_every_command_is_named_in_its_section(design: str) -> None:
    assert len(command_flags()) >= 6
    assert flag_problems(design) == []


def test_every_crd_field_is_named_and_no_other(design: str) -> None:
    assert len(crd_field_paths()) > 100
    assert field_problems(design) == []


def test_the_quota_api_routes_are_those_of_the_openapi_document(design: str) -> None:
    assert route_problems(design) == []


def test_the_printer_columns_are_those_of_the_crd(design: str) -> None:
    assert column_problems(design) == []


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("`--jobs", "`--workers", ["meltguard simulate: --jobs exists",
                               "names a flag of meltguard simulate: --workers"]),
    ("`-f`", "`-F`", ["meltguard validate: -f exists", "meltguard validate: -F, which"]),
    ("`spec.quotas.tighten.factor`", "`spec.quotas.tighten.ratio`",
     ["spec.quotas.tighten.factor exists", "spec.quotas.tighten.ratio, which"]),
    ("`status.controller.limits[].limit`", "`status.controller.limits.limit`",
     ["status.controller.limits[].limit exists", "status.controller.limits.limit, which"]),
    ("`POST /v1/refund`", "`POST /v1/refunds`", ["POST /v1/refund exists",
                                                 "POST /v1/refunds, which"]),
    ("`Free-Limit`", "`FreeLimit`", ["Free-Limit exists", "FreeLimit, which"]),
])
def test_a_renamed_name_is_reported_both_ways(design: str, old: str, new: str,
                                              expected: list[str]) -> None:
    """The checks can fail: a name changed in the doc is missing on one side, unknown on the
    other."""
    assert old in design
    changed = design.replace(old, new)
    problems = " | ".join(flag_problems(changed) + field_problems(changed)
                          + route_problems(changed) + column_problems(changed))
    for words in expected:
        assert words in problems


def test_a_metric_or_alert_missing_from_the_doc_is_reported(design: str,
                                                            served_metrics: frozenset[str]) -> None:
    without = design.replace("meltguard_quota_baseline", "meltguard_quota_base")
    assert metric_problems(without, served_metrics) == [
        "the metric family meltguard_quota_baseline exists but docs/design.md does not name it",
        "docs/design.md names the metric family meltguard_quota_base, which does not exist",
    ]
    alerts = frozenset({"MeltguardGPUsMelting", "MeltguardSomethingNew"})
    problems = alert_problems("`MeltguardGPUsMelting` and `MeltguardOperatorDown`", alerts)
    assert problems == [
        "the alert MeltguardSomethingNew exists but docs/design.md does not name it",
        "docs/design.md names the alert MeltguardOperatorDown, which does not exist",
    ]


def test_the_architecture_page_names_only_modules_that_exist() -> None:
    """Module paths (relative to the package) exist, and so does every file name it uses."""
    page = ARCHITECTURE.read_text()
    paths = {span for span in spans(page) if MODULE_PATH.fullmatch(span)}
    assert len(paths) > 20
    assert sorted(path for path in paths
                  if not (PACKAGE / path).exists() and not (REPO_ROOT / path).exists()) == []
    files = {path.name for path in PACKAGE.rglob("*.py")}
    assert sorted(set(MODULE_FILE.findall(page)) - files) == []


def test_the_docs_do_not_point_outside_the_repository() -> None:
    """Every relative link of docs/ resolves to a file of the repository."""
    for page in (DESIGN, ARCHITECTURE):
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            resolved = (page.parent / target).resolve()
            assert resolved.is_relative_to(REPO_ROOT) and resolved.exists(), (page.name, target)
