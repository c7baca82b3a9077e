"""``meltguard operator``: flags, and the hand-over to :mod:`meltguard.k8s.runner`.

Only the standard library is imported here, so ``meltguard --help`` stays fast.
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the operator's flags."""
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--namespace", "-n", action="append", dest="namespaces", default=[],
                       metavar="NS",
                       help="watch this namespace (repeatable; globs like 'team-*' need list/watch "
                            "on namespaces and CRDs)")
    scope.add_argument("--all-namespaces", "-A", action="store_true",
                       help="watch every namespace (the default when no --namespace is given)")
    parser.add_argument("--metrics-port", type=int, default=8000, metavar="PORT",
                        help="serve Prometheus metrics on this port, 0 to disable "
                             "(default: %(default)s)")
    parser.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", metavar="URL",
                        help="kopf's liveness endpoint, empty to disable (default: %(default)s)")
    parser.add_argument("--peering", default=None, metavar="NAME",
                        help="run with kopf peering under this KopfPeering name, so a standby "
                             "replica pauses while another one is active (default: standalone)")
    parser.add_argument("--priority", type=int, default=0,
                        help="peering priority: the highest-priority replica is the active one "
                             "(default: %(default)s)")
    parser.add_argument("--verbose", "-v", action="store_true", help="log at DEBUG level")


def run(args: argparse.Namespace) -> int:
    """Run the operator until SIGTERM/SIGINT; returns the exit code."""
    from meltguard.k8s.runner import OperatorOptions, serve

    if not 0 <= args.metrics_port <= 65535:
        print(f"meltguard operator: --metrics-port must be 0..65535, got {args.metrics_port}")
        return 2
    options = OperatorOptions(
        namespaces=tuple(args.namespaces),
        metrics_port=args.metrics_port,
        liveness_endpoint=args.liveness or None,
        peering_name=args.peering,
        priority=args.priority,
        verbose=args.verbose,
    )
    return serve(options)
