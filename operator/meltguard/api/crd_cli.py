"""``meltguard crd``: print (or write) the CRD generated from the models."""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    """Flags of ``meltguard crd``."""
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="write to FILE instead of standard output")


def run(args: argparse.Namespace) -> int:
    """Render the CRD; returns the exit code."""
    from meltguard.api.crd import render_crd

    text = render_crd()
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    return 0
