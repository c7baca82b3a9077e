"""``meltguard validate -f FILE``: check ImageQuotaPolicy documents offline.

Exit 0 with one summary line per valid object; exit 1 with one line per problem, each naming
the object, the field path and what is wrong. Never a traceback, whatever the file holds.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO


def configure(parser: argparse.ArgumentParser) -> None:
    """Flags of ``meltguard validate``."""
    parser.add_argument("-f", "--filename", required=True, action="append", metavar="FILE",
                        help="YAML file (several documents allowed), '-' for standard input;"
                             " repeatable")


def run(args: argparse.Namespace) -> int:
    """Validate every document of every file; returns the exit code."""
    from meltguard.api.documents import load_documents, summarize, validate_document

    failed = False
    for filename in args.filename:
        try:
            documents = load_documents(filename)
        except (OSError, ValueError) as error:
            print(f"error  {filename}: {error}", file=sys.stderr)
            failed = True
            continue
        for label, document in documents:
            failed |= not _report(label, document, validate_document, summarize, sys.stdout)
    return 1 if failed else 0


def _report(label: str, document: Any, validate: Any, summarize: Any, out: TextIO) -> bool:
    """Print the verdict on one document; True when it is valid."""
    policy, errors = validate(document)
    name = _object_name(document) or label
    if errors:
        for error in errors:
            print(f"error  {name}: {error.path}: {error.message}", file=sys.stderr)
        return False
    print(f"ok     {name}: {summarize(policy)}", file=out)
    return True


def _object_name(document: Any) -> str | None:
    if not isinstance(document, dict) or not isinstance(document.get("metadata"), dict):
        return None
    metadata = document["metadata"]
    name, namespace = metadata.get("name"), metadata.get("namespace")
    if not isinstance(name, str):
        return None
    return f"{namespace}/{name}" if isinstance(namespace, str) else name
