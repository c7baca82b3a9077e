"""The command lines the chart gives its containers are accepted by the real `meltguard` CLI."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
from pathlib import Path

import pytest

from meltguard.cli import SUBCOMMANDS, build_parser

from .helm import Helm, pod_specs
from .test_render import RENDER_CASES

PEERING = ["operator.peering.enabled=true", "operator.watchNamespaces={inference}"]


def parse(args: list[str]) -> argparse.Namespace:
    """Parse like `meltguard ARGS`; an argparse error becomes an AssertionError with its text."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return build_parser().parse_args(args)
    except SystemExit as exit_:
        raise AssertionError(f"meltguard {' '.join(args)}: {stderr.getvalue().strip()}") from exit_


def container_commands(helm: Helm, files: tuple[Path, ...], settings: list[str]) -> list[list[str]]:
    return [
        container["args"]
        for _, spec in pod_specs(helm.template(files, settings=settings))
        for container in spec["containers"]
    ]


@pytest.mark.parametrize("settings", [[], PEERING], ids=["plain", "peering"])
@pytest.mark.parametrize("files", RENDER_CASES)
def test_every_container_command_parses(
    helm: Helm, files: tuple[Path, ...], settings: list[str]
) -> None:
    if any(path.stem == "sharded-values" for path in files):
        # Namespaces are listed per shard there; operator.watchNamespaces would contradict them.
        settings = [s for s in settings if not s.startswith("operator.watchNamespaces")]
    commands = container_commands(helm, files, settings)
    assert commands
    for args in commands:
        assert args[0] in SUBCOMMANDS, args
        if importlib.util.find_spec(SUBCOMMANDS[args[0]][0]) is None:
            pytest.skip(f"`meltguard {args[0]}` is not written yet")
        assert parse(args).command == args[0]


def test_parse_rejects_an_unknown_flag() -> None:
    """The check above can fail: a flag the CLI does not know is an error."""
    with pytest.raises(AssertionError, match="unrecognized arguments"):
        parse(["quota-server", "--watch-configmaps=x", "--no-such-flag"])


def test_peering_flags_reach_the_operator(helm: Helm) -> None:
    commands = container_commands(helm, (), PEERING)
    operators = [parse(args) for args in commands if args[0] == "operator"]
    assert [o.priority for o in operators] == [100, 50], "active, then standby"
    for parsed in operators:
        assert parsed.peering == "meltguard"
        assert parsed.namespaces == ["inference"]
