"""The ``meltguard`` command.

Each subcommand lives in its area's ``cli`` module, which offers ``configure(parser)`` and
``run(args) -> int`` and imports only the standard library at module level, so that
``meltguard --help`` stays fast and one area's heavy dependencies never load for another.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: subcommand -> (module holding configure/run, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "operator": ("meltguard.k8s.cli", "run the kopf operator reconciling ImageQuotaPolicy objects"),
    "exporter": ("meltguard.exporter.cli", "serve NVML GPU metrics (or simulated GPUs)"),
    "quota-server": ("meltguard.quota.cli", "answer 'may this user generate one more image?'"),
    "simulate": ("meltguard.sim.cli", "replay a demand surge against a simulated GPU fleet"),
    "validate": ("meltguard.api.cli", "check ImageQuotaPolicy files offline"),
    "crd": ("meltguard.api.crd_cli", "print the CRD generated from the models"),
}
#: subcommand -> the package extra that installs what it needs beyond the base install
EXTRAS: dict[str, str] = {"operator": "operator", "exporter": "exporter",
                          "quota-server": "quota"}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="meltguard",
        description="Keeps GPU inference fleets from melting: scaling and per-tier quota shedding.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(module_name)
        sub = commands.add_parser(name, help=help_text, description=help_text)
        module.configure(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as missing:
        extra = EXTRAS.get(args.command)
        package = (missing.name or "meltguard").partition(".")[0]
        if extra is None or package == "meltguard":
            raise
        print(f"meltguard {args.command}: the Python package {package!r} is not installed;"
              f" this part needs: pip install 'meltguard[{extra}]'", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
