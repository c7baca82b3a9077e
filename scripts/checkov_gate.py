"""Pass or fail checkov's JSON report against the waivers in scans/checkov-waivers.yaml.

checkov's own skip list takes check ids only, for every resource; a waiver here names the
check, the resources it covers (shell patterns on checkov's ``Kind.namespace.name`` ids, or
``Dockerfile.*``) and the reason. Every failed check that no waiver covers fails the gate, as
does a waiver that covers nothing any more, so the list stays true as the chart changes.
checkov gives severities only when logged in to its vendor's platform, so none are assumed
here: every finding is fixed or waived, whatever its severity.

Usage: checkov_gate.py WAIVERS.yaml REPORT.json   (checkov ... -o json > REPORT.json)
Exit status: 0 when every finding is waived, 1 otherwise, 2 on an unreadable input.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml


class GateInputInvalid(ValueError):
    """A waivers file or report that cannot be used; the message names the place."""


@dataclass(frozen=True)
class Waiver:
    check: str
    resources: tuple[str, ...]
    reason: str

    def covers(self, finding: Finding) -> bool:
        return finding.check == self.check and any(
            fnmatchcase(finding.resource, pattern) for pattern in self.resources
        )


@dataclass(frozen=True)
class Finding:
    check: str
    name: str
    resource: str
    file: str
    severity: str | None


@dataclass(frozen=True)
class Verdict:
    passed: int
    waived: list[tuple[Finding, Waiver]]
    open: list[Finding]
    unused: list[Waiver]

    @property
    def ok(self) -> bool:
        return not self.open and not self.unused


def parse_waivers(document: Any) -> list[Waiver]:
    """The waivers of a loaded YAML list; each needs a check, resources and a reason."""
    if not isinstance(document, list):
        raise GateInputInvalid("waivers: expected a list of {check, resources, reason}")
    waivers = []
    for index, entry in enumerate(document):
        place = f"waivers[{index}]"
        if not isinstance(entry, dict) or set(entry) != {"check", "resources", "reason"}:
            raise GateInputInvalid(f"{place}: needs exactly the keys check, resources, reason")
        resources = entry["resources"]
        if not isinstance(resources, list) or not resources or not all(
            isinstance(pattern, str) and pattern for pattern in resources
        ):
            raise GateInputInvalid(f"{place}.resources: a non-empty list of patterns")
        if not isinstance(entry["reason"], str) or len(entry["reason"].split()) < 5:
            raise GateInputInvalid(f"{place}.reason: say why, in a sentence")
        waivers.append(Waiver(str(entry["check"]), tuple(resources), entry["reason"].strip()))
    return waivers


def parse_report(document: Any) -> tuple[int, list[Finding]]:
    """Passed count and failed checks of checkov's JSON (one report or a list of them)."""
    reports = document if isinstance(document, list) else [document]
    passed = 0
    findings = []
    for report in reports:
        if not isinstance(report, dict) or "results" not in report:
            raise GateInputInvalid("report: not checkov's JSON output (no 'results')")
        # --quiet leaves passed checks out of "results"; the summary still counts them.
        passed += report.get("summary", {}).get("passed", 0)
        for failed in report["results"].get("failed_checks", []):
            findings.append(
                Finding(
                    check=failed["check_id"],
                    name=failed["check_name"],
                    resource=failed["resource"],
                    file=failed["file_path"],
                    severity=failed.get("severity"),
                )
            )
    return passed, findings


def judge(passed: int, findings: list[Finding], waivers: list[Waiver]) -> Verdict:
    """Split the findings into waived and open ones; list waivers that covered nothing."""
    waived = []
    unwaived = []
    used: set[Waiver] = set()
    for finding in findings:
        waiver = next((w for w in waivers if w.covers(finding)), None)
        if waiver is None:
            unwaived.append(finding)
        else:
            waived.append((finding, waiver))
            used.add(waiver)
    return Verdict(passed, waived, unwaived, [w for w in waivers if w not in used])


def summary(verdict: Verdict) -> str:
    """A few lines for the CI log: counts, waived checks with their reason, what is open."""
    lines = [
        f"checkov: {verdict.passed} passed, {len(verdict.waived)} failed but waived,"
        f" {len(verdict.open)} failed and not waived, {len(verdict.unused)} unused waivers"
    ]
    by_waiver: dict[Waiver, set[str]] = {}
    for finding, waiver in verdict.waived:
        by_waiver.setdefault(waiver, set()).add(finding.resource)
    for waiver, resources in by_waiver.items():
        lines.append(f"  waived {waiver.check} on {', '.join(sorted(resources))}: {waiver.reason}")
    for finding in verdict.open:
        severity = f" [{finding.severity}]" if finding.severity else ""
        lines.append(
            f"  OPEN   {finding.check}{severity} {finding.name}: {finding.resource}"
            f" ({finding.file})"
        )
    for waiver in verdict.unused:
        lines.append(
            f"  UNUSED waiver {waiver.check} on {', '.join(waiver.resources)}: nothing fails"
            " it any more, remove it"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    waivers_path, report_path = (Path(arg) for arg in argv)
    try:
        waivers = parse_waivers(yaml.safe_load(waivers_path.read_text()))
        passed, findings = parse_report(json.loads(report_path.read_text()))
    except (OSError, ValueError, KeyError, yaml.YAMLError) as error:
        print(f"checkov_gate: {error}", file=sys.stderr)
        return 2
    verdict = judge(passed, findings, waivers)
    print(summary(verdict))
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
