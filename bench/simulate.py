"""Time ``meltguard simulate`` end to end (target: the table in under 10 s on 2 cores).

Runs the real command (a fresh process each time: imports, users, all three strategies over
24 simulated hours and 1,000 GPUs, the table) and prints the median wall time, next to two
baselines measured in the same run: the same command with ``--jobs 1`` (every strategy in one
process), and a process that only starts Python and imports the simulator (the fixed cost).

    python bench/simulate.py [--repeat 3] [--scenario ghibli-surge]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def median_wall(command: list[str], repeat: int) -> float:
    """Median seconds of ``command`` over ``repeat`` runs; fails loudly if it fails."""
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--scenario", default="ghibli-surge")
    args = parser.parse_args()
    simulate = [sys.executable, "-m", "meltguard.cli", "simulate", "--scenario", args.scenario]
    imports = [sys.executable, "-c", "import meltguard.sim.compare, meltguard.sim.report"]
    default = median_wall(simulate, args.repeat)
    one_process = median_wall([*simulate, "--jobs", "1"], args.repeat)
    fixed = median_wall(imports, args.repeat)
    print(f"meltguard simulate --scenario {args.scenario}: {os.cpu_count()} CPUs,"
          f" median of {args.repeat}")
    print(f"  default (strategies in parallel): {default:6.2f} s   target < 10 s")
    print(f"  baseline --jobs 1 (one process):  {one_process:6.2f} s")
    print(f"  baseline start + imports only:    {fixed:6.2f} s")


if __name__ == "__main__":
    main()
