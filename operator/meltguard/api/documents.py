"""Reading ImageQuotaPolicy documents from YAML files, and one-line summaries of them."""

from __future__ import annotations

import sys
from typing import Any

import yaml

from meltguard.api.models import ImageQuotaPolicy
from meltguard.api.validation import FieldError, PolicyInvalid, parse_policy


def load_documents(filename: str) -> list[tuple[str, Any]]:
    """Every non-empty YAML document of a file ('-' for stdin), labelled ``FILE#N``.

    Raises OSError when the file cannot be read and ValueError (with the line) on bad YAML.
    """
    if filename == "-":
        text = sys.stdin.read()
    else:
        with open(filename, encoding="utf-8") as source:
            text = source.read()
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ValueError(f"not valid YAML{where}: {problem}") from None
    return [
        (f"{filename}#{index + 1}", document)
        for index, document in enumerate(documents)
        if document is not None
    ]


def validate_document(document: Any) -> tuple[ImageQuotaPolicy | None, tuple[FieldError, ...]]:
    """The policy, or the problems that stop it from being one."""
    try:
        return parse_policy(document), ()
    except PolicyInvalid as invalid:
        return None, invalid.errors


def summarize(policy: ImageQuotaPolicy) -> str:
    """``Deployment/imagegen-worker, replicas 2..64, telemetry exporter, tiers free 3/24h, ...``."""
    spec = policy.spec
    tiers = ", ".join(
        f"{tier.name} unlimited" if tier.unlimited else f"{tier.name} {tier.limit}/{tier.window}"
        for tier in spec.quotas.tiers
    )
    flags = "".join(f", {flag}" for flag, on in (("paused", spec.paused),
                                                  ("dryRun", spec.dry_run)) if on)
    target = spec.scale_target_ref
    return (
        f"{target.kind}/{target.name}, replicas {spec.min_replicas}..{spec.max_replicas},"
        f" telemetry {spec.telemetry.source}, tiers {tiers}{flags}"
    )
