"""Time ``meltguard simulate`` end to end: one default run, and the suite over five seeds.

Targets (issue 14): the default run (ghibli-surge, three strategies, 24 simulated hours,
1,000 GPUs, the table) in at most 5 s, and ``--suite --seeds 5`` (six scenarios x five seeds
x three strategies) in at most 60 s, on two cores. Each command runs as a fresh process, as a
user runs it. Printed next to them, measured in the same run:

* the default run with ``--jobs 1`` (every strategy in one process) and a process that only
  starts Python and imports the simulator (the fixed cost);
* the CPU time each command's processes used (for the suite, over two: the wall time two free
  cores would take). On a machine shared with other work the wall time is longer than that,
  which the load average printed first hints at; CPU times compare better across runs then.

    python bench/simulate.py [--repeat 3] [--suite-repeat 1] [--seeds 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time


def children_cpu_seconds() -> float:
    """CPU seconds (user and system) used so far by this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median_wall(command: list[str], repeat: int) -> tuple[float, float]:
    """Median wall seconds of ``command`` over ``repeat`` runs, and the median CPU seconds its
    processes used; fails loudly if it fails."""
    walls, cpus = [], []
    for _ in range(repeat):
        cpu_before = children_cpu_seconds()
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        walls.append(time.perf_counter() - start)
        cpus.append(children_cpu_seconds() - cpu_before)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of the default command")
    parser.add_argument("--suite-repeat", type=int, default=1, help="runs of the suite")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per suite scenario")
    args = parser.parse_args()
    simulate = [sys.executable, "-m", "meltguard.cli", "simulate"]
    imports = [sys.executable, "-c", "import meltguard.sim.compare, meltguard.sim.report"]
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"meltguard simulate: {os.cpu_count()} CPUs, load average {load},"
          f" Python {sys.version.split()[0]}")
    default, default_cpu = median_wall(simulate, args.repeat)
    one_process, one_process_cpu = median_wall([*simulate, "--jobs", "1"], args.repeat)
    fixed, fixed_cpu = median_wall(imports, args.repeat)
    print(f"default run (ghibli-surge), median of {args.repeat}:")
    print(f"  default (strategies in parallel): {default:6.2f} s   target <= 5 s"
          f"   CPU {default_cpu:6.2f} s")
    print(f"  baseline --jobs 1 (one process):  {one_process:6.2f} s"
          f"                  CPU {one_process_cpu:6.2f} s")
    print(f"  baseline start + imports only:    {fixed:6.2f} s"
          f"                  CPU {fixed_cpu:6.2f} s")
    suite, suite_cpu = median_wall([*simulate, "--suite", "--seeds", str(args.seeds)],
                                   args.suite_repeat)
    print(f"suite, {args.seeds} seeds each, median of {args.suite_repeat}:")
    print(f"  --suite --seeds {args.seeds}:              {suite:6.2f} s   target <= 60 s")
    print(f"  its CPU time over two cores:      {suite_cpu / 2:6.2f} s")


if __name__ == "__main__":
    main()
