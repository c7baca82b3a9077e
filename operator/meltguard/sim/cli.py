"""``meltguard simulate``: replay a surge against a simulated fleet with the real control code.

Only the standard library is imported here; the simulator loads inside :func:`run`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meltguard.sim.compare import Comparison
    from meltguard.sim.suite import Case

#: :data:`meltguard.sim.scenario.DEFAULT_SCENARIO`, named again so that this module stays light
DEFAULT_SCENARIO = "ghibli-surge"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the ``simulate`` flags."""
    parser.add_argument("--scenario", metavar="NAME|FILE",
                        help=f"built-in scenario name or scenario YAML file"
                             f" (default: {DEFAULT_SCENARIO})")
    parser.add_argument("--suite", action="store_true",
                        help="run every built-in scenario and print one table"
                             " (scenario x strategy)")
    parser.add_argument("--policy", type=Path, metavar="FILE",
                        help="ImageQuotaPolicy YAML for the meltguard strategy"
                             " (default: the scenario's own policy)")
    parser.add_argument("--defaults", action="store_true",
                        help="run the policy with only scaleTargetRef, min/maxReplicas and the"
                             " tiers kept: every tuning field at its default")
    parser.add_argument("--plot", type=Path, metavar="PATH",
                        help="also draw the day: a PNG file, or with --suite a folder that"
                             " gets one PNG per scenario")
    parser.add_argument("--json", action="store_true",
                        help="print the figures and time series as JSON instead of the table")
    parser.add_argument("--seed", type=int, metavar="N",
                        help="random seed of the users, the first one with --seeds"
                             " (default: the scenario's seed); same seed, same figures")
    parser.add_argument("--seeds", type=int, default=1, metavar="N",
                        help="run N seeds from --seed on and give median (min-max)"
                             " of each figure (default: 1)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), metavar="N",
                        help="processes to spread the work over (default: 2, or 1 on a"
                             " single CPU)")


def _problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the flags together, if anything."""
    if args.seed is not None and args.seed < 0:
        return "--seed must be 0 or more"
    if args.seeds < 1:
        return "--seeds must be 1 or more"
    if args.jobs < 1:
        return "--jobs must be 1 or more"
    if args.suite and args.scenario is not None:
        return "--suite runs every built-in scenario: leave out --scenario"
    if args.defaults and args.policy is not None:
        return "--defaults keeps the scenario's policy's target and tiers: leave out --policy"
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        return "--plot needs matplotlib, which is not installed: pip install 'meltguard[plot]'"
    return None


def _cases(args: argparse.Namespace) -> list[Case]:
    """The scenarios to run, each with its policy and seeds (raises on bad input)."""
    from meltguard.sim.scenario import (
        built_in_names,
        defaults_only,
        load_policy,
        load_scenario,
    )
    from meltguard.sim.suite import Case, seeds_from

    names = built_in_names() if args.suite else [args.scenario or DEFAULT_SCENARIO]
    cases = []
    for name in names:
        scenario, policy = load_scenario(name)
        if args.policy is not None:
            policy = load_policy(args.policy, scenario)
        if args.defaults:
            policy = defaults_only(policy)
        first = scenario.seed if args.seed is None else args.seed
        cases.append(Case(scenario, policy, seeds_from(first, args.seeds)))
    return cases


def _simulate(cases: list[Case], jobs: int) -> list[list[Comparison]]:
    """One comparison spreads its strategies over the processes; several spread themselves."""
    from meltguard.sim.compare import compare
    from meltguard.sim.progress import progress_bar
    from meltguard.sim.suite import case_steps, run_cases

    with progress_bar(sum(case_steps(case) for case in cases), sys.stderr) as advance:
        if len(cases) == 1 and len(cases[0].seeds) == 1:
            case = cases[0]
            return [[compare(case.scenario, case.policy, case.seeds[0], jobs=jobs,
                             progress=advance)]]
        return run_cases(cases, jobs=jobs, progress=advance)


def _unwritable_plot(path: Path | None, *, suite: bool) -> str | None:
    """Why the plot could not be written, found before the simulation runs, if it can be."""
    if path is None:
        return None
    if suite:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            return str(error)
        return None
    if not path.parent.is_dir():
        return f"no folder {path.parent}"
    return None


def _plot(results: list[list[Comparison]], path: Path, *, suite: bool) -> str:
    """Write the plot(s); returns what to tell the user."""
    from meltguard.sim.plot import write_plot, write_plots

    if suite:
        written = write_plots(results, path)
        return f"{len(written)} plots written to {path}"
    write_plot(results[0][0], path)
    return f"plot written to {path}"


def _output(results: list[list[Comparison]], args: argparse.Namespace) -> str:
    import json

    from meltguard.sim.report import (
        comparison_json,
        format_suite,
        format_table,
        seeds_json,
        suite_json,
    )

    if not args.json:
        return format_suite(results) if args.suite else format_table(results[0])
    document: dict[str, Any]
    if args.suite:
        document = suite_json(results)
    elif args.seeds > 1:
        document = seeds_json(results[0])
    else:
        document = comparison_json(results[0][0])
    return json.dumps(document, allow_nan=False)


def run(args: argparse.Namespace) -> int:
    """Run the comparison(s), print the table (or JSON), write the plot; 2 on bad input."""
    from meltguard.sim.errors import SimulationInputInvalid

    problem = _problem(args)
    if problem:
        print(f"meltguard simulate: {problem}", file=sys.stderr)
        return 2
    try:
        cases = _cases(args)
    except SimulationInputInvalid as invalid:
        print(f"meltguard simulate: {invalid}", file=sys.stderr)
        return 2
    plot_problem = _unwritable_plot(args.plot, suite=args.suite)
    if plot_problem:
        print(f"meltguard simulate: cannot write the plot {args.plot}: {plot_problem}",
              file=sys.stderr)
        return 1
    results = _simulate(cases, args.jobs)
    told = None
    if args.plot is not None:
        try:
            told = _plot(results, args.plot, suite=args.suite)
        except OSError as error:
            print(f"meltguard simulate: cannot write the plot {args.plot}: {error}",
                  file=sys.stderr)
            return 1
    print(_output(results, args))
    if told and not args.json:
        print(told)
    return 0
