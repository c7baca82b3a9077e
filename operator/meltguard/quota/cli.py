"""``meltguard quota-server``: flags, and wiring the service together (heavy imports in run)."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the quota-server flags."""
    parser.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    parser.add_argument(
        "--grpc-port",
        type=int,
        default=8081,
        help="port of Envoy's rate limit API over gRPC (default 8081; 0 turns it off)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="gRPC: refuse (OVER_LIMIT) descriptors naming an unknown domain, policy or tier "
        "instead of allowing them",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="serve /metrics on this port only, not on --port (default 0: on --port)",
    )
    parser.add_argument(
        "--auth-tokens",
        metavar="FILE",
        help="require Authorization: Bearer <token> on /v1/ requests; FILE holds one "
        "caller-name:token a line (re-read on change); refunds only by the consuming caller",
    )
    parser.add_argument(
        "--store",
        default="memory",
        help="'memory' (default, one replica), redis://HOST:PORT/DB (shared, durable) or "
        "redis-cluster://HOST:PORT[,HOST:PORT...] (a Redis Cluster, named by some of its "
        "nodes)",
    )
    limits = parser.add_mutually_exclusive_group(required=True)
    limits.add_argument(
        "--limits",
        metavar="PATH",
        help="a quotas.json file or a folder of them (reloaded on change)",
    )
    limits.add_argument(
        "--watch-configmaps",
        metavar="NS",
        help="watch ConfigMaps labelled meltguard.io/quotas=true in namespace NS "
        "(NS,NS,... for several; '*' for all)",
    )
    parser.add_argument(
        "--on-store-error",
        choices=("open", "closed"),
        default="open",
        help="when the store fails: allow requests (open, default) or refuse them (closed)",
    )
    parser.add_argument(
        "--read-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="HTTP: time a client has to send a request's headers (or to stay idle between "
        "requests), then as long again for its body (default 10)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=1000,
        metavar="N",
        help="HTTP: connections open at once; a new one closes the least recently active "
        "(default 1000)",
    )
    parser.add_argument(
        "--max-request-ids",
        type=int,
        default=200_000,
        metavar="N",
        help="memory store: request ids remembered at most; past it the oldest is forgotten "
        "(counted in meltguard_quota_request_ids_forgotten_total; default 200000)",
    )
    parser.add_argument(
        "--fail-open-for",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="with --on-store-error open: allow requests for at most this long after the "
        "store's last answer (a store that never answered is never failed open; default 300)",
    )
    parser.add_argument(
        "--store-timeout",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how long to wait for Redis to connect or answer before --on-store-error applies",
    )
    parser.add_argument(
        "--reload-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how often --limits files are checked for changes (default 1)",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; returns the exit code."""
    import asyncio
    import logging

    from meltguard.quota.server import ServerOptions, serve

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    options = ServerOptions(
        host=args.host,
        port=args.port,
        store_url=args.store,
        limits_path=args.limits,
        watch_namespace=args.watch_configmaps,
        on_store_error=args.on_store_error,
        reload_interval=args.reload_interval,
        store_timeout=args.store_timeout,
        fail_open_seconds=args.fail_open_for,
        read_timeout=args.read_timeout,
        max_connections=args.max_connections,
        max_request_ids=args.max_request_ids,
        grpc_port=args.grpc_port,
        strict=args.strict,
        auth_tokens=args.auth_tokens,
        metrics_port=args.metrics_port,
    )
    try:
        asyncio.run(serve(options))
    except ValueError as error:  # bad flag values, named by serve()
        logging.getLogger("meltguard.quota").error("%s", error)
        return 2
    return 0
