"""``meltguard exporter``: serve GPU metrics from NVML, or from simulated GPUs for fire drills.

Only the standard library is imported at module level, so ``meltguard --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meltguard.exporter.sampler import Attribution

DEFAULT_POD_RESOURCES_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
ATTRIBUTIONS = ("auto", "pod-resources", "sidecar", "none")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the exporter's flags; pod identity defaults come from the downward-API env."""
    parser.add_argument("--port", type=int, default=9400, help="HTTP port (default 9400)")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument(
        "--simulate", type=int, metavar="N", help="serve N simulated GPUs instead of NVML"
    )
    parser.add_argument(
        "--attach",
        metavar="NS/POD,...",
        help="with --simulate: attribute GPUs round-robin to these pods",
    )
    parser.add_argument(
        "--node",
        default=os.environ.get("NODE_NAME") or socket.gethostname(),
        help="node label (default: $NODE_NAME, else the hostname)",
    )
    parser.add_argument(
        "--attribution",
        choices=ATTRIBUTIONS,
        default="auto",
        help="how GPUs get their pod: kubelet pod-resources (DaemonSet), the exporter's own pod "
        "(sidecar), or none; auto picks pod-resources when its socket exists, else sidecar when "
        "the pod is known, else none",
    )
    parser.add_argument(
        "--pod-name", default=os.environ.get("POD_NAME"), help="sidecar: pod (default $POD_NAME)"
    )
    parser.add_argument(
        "--pod-namespace",
        default=os.environ.get("POD_NAMESPACE"),
        help="sidecar: namespace (default $POD_NAMESPACE)",
    )
    parser.add_argument(
        "--container",
        default=os.environ.get("CONTAINER_NAME"),
        help="sidecar: container (default $CONTAINER_NAME)",
    )
    parser.add_argument(
        "--pod-resources-socket",
        default=DEFAULT_POD_RESOURCES_SOCKET,
        help=f"kubelet pod-resources socket (default {DEFAULT_POD_RESOURCES_SOCKET})",
    )
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between GPU samples (default 1)"
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="logging level (default INFO)",
    )


class UsageError(ValueError):
    """A flag combination that cannot work; the message names the flag."""


def _attribution(args: argparse.Namespace) -> Attribution:
    from meltguard.exporter.attribution import NoAttribution, SidecarAttribution, parse_attach
    from meltguard.exporter.devices import PodRef

    if args.attach:
        if args.simulate is None:
            raise UsageError("--attach only applies with --simulate N")
        from meltguard.exporter.attribution import RoundRobinAttribution

        return RoundRobinAttribution(parse_attach(args.attach))
    mode = args.attribution
    if mode == "auto":
        if os.path.exists(args.pod_resources_socket):
            mode = "pod-resources"
        else:
            mode = "sidecar" if args.pod_name and args.pod_namespace else "none"
    if mode == "pod-resources":
        from meltguard.exporter.podresources import PodResourcesAttribution

        return PodResourcesAttribution(args.pod_resources_socket)
    if mode == "sidecar":
        if not (args.pod_name and args.pod_namespace):
            raise UsageError(
                "--attribution sidecar needs --pod-name and --pod-namespace "
                "(or POD_NAME/POD_NAMESPACE)"
            )
        return SidecarAttribution(PodRef(args.pod_namespace, args.pod_name, args.container or None))
    return NoAttribution()


def run(args: argparse.Namespace) -> int:
    """Start the exporter and serve until interrupted; 2 on a usage error."""
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from aiohttp import web

    from meltguard.exporter.app import create_app
    from meltguard.exporter.nvml import NvmlBackend
    from meltguard.exporter.sampler import Sampler
    from meltguard.exporter.simulated import SimulatedBackend

    try:
        if args.simulate is not None and args.simulate < 1:
            raise UsageError(f"--simulate needs at least 1 GPU, got {args.simulate}")
        if args.interval <= 0:
            raise UsageError(f"--interval must be positive, got {args.interval}")
        if not 0 < args.port < 65536:
            raise UsageError(f"--port must be 1..65535, got {args.port}")
        attribution = _attribution(args)
    except ValueError as error:
        print(f"meltguard exporter: {error}", file=sys.stderr)
        return 2
    simulated = SimulatedBackend(args.simulate, args.node) if args.simulate is not None else None
    backend = simulated if simulated is not None else NvmlBackend()
    app = create_app(Sampler(backend, attribution, interval=args.interval), args.node, simulated)
    try:
        web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)
    except OSError as error:
        print(
            f"meltguard exporter: cannot listen on {args.host}:{args.port}: {error}",
            file=sys.stderr,
        )
        return 1
    return 0
