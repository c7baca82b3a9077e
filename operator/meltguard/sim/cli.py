"""``meltguard simulate``: replay a surge against a simulated fleet with the real control code.

Only the standard library is imported here; the simulator loads inside :func:`run`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_SCENARIO = "ghibli-surge"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``simulate`` flags."""
    parser.add_argument("--scenario", default=DEFAULT_SCENARIO, metavar="NAME|FILE",
                        help=f"built-in scenario name or scenario YAML file"
                             f" (default: {DEFAULT_SCENARIO})")
    parser.add_argument("--policy", type=Path, metavar="FILE",
                        help="ImageQuotaPolicy YAML for the meltguard strategy"
                             " (default: the scenario's own policy)")
    parser.add_argument("--plot", type=Path, metavar="PNG",
                        help="also write a plot of the day to this PNG file")
    parser.add_argument("--json", action="store_true",
                        help="print the figures and time series as JSON instead of the table")
    parser.add_argument("--seed", type=int, metavar="N",
                        help="random seed of the users (default: the scenario's seed);"
                             " same seed, same figures")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), metavar="N",
                        help="processes to spread the strategies over"
                             " (default: 2, or 1 on a single CPU)")


def run(args: argparse.Namespace) -> int:
    """Run the comparison, print the table (or JSON), write the plot; 2 on bad input."""
    import json

    from meltguard.sim.compare import compare, default_strategies, total_steps
    from meltguard.sim.errors import SimulationInputInvalid
    from meltguard.sim.progress import progress_bar
    from meltguard.sim.report import comparison_json, format_table
    from meltguard.sim.scenario import load_policy, load_scenario

    if args.seed is not None and args.seed < 0:
        print("meltguard simulate: --seed must be 0 or more", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print("meltguard simulate: --jobs must be 1 or more", file=sys.stderr)
        return 2
    try:
        scenario, policy = load_scenario(args.scenario)
        if args.policy is not None:
            policy = load_policy(args.policy, scenario)
    except SimulationInputInvalid as invalid:
        print(f"meltguard simulate: {invalid}", file=sys.stderr)
        return 2
    seed = scenario.seed if args.seed is None else args.seed
    strategies = default_strategies(scenario, policy)
    with progress_bar(total_steps(scenario, len(strategies)), sys.stderr) as advance:
        comparison = compare(scenario, policy, seed, strategies, args.jobs, advance)
    if args.plot is not None:
        from meltguard.sim.plot import write_plot

        try:
            write_plot(comparison, args.plot)
        except OSError as error:
            print(f"meltguard simulate: cannot write the plot {args.plot}: {error}",
                  file=sys.stderr)
            return 1
    if args.json:
        json.dump(comparison_json(comparison), sys.stdout, allow_nan=False)
        sys.stdout.write("\n")
    else:
        print(format_table(comparison))
        if args.plot is not None:
            print(f"plot written to {args.plot}")
    return 0
