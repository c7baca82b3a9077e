"""Time one decide() for one policy over 10,000 GPUs (target: <= 2 us per GPU sample).

Prints the median of repeated runs, per decide() and per sample, next to a baseline measured in
the same run: a bare Python loop that only touches each sample's fields (the floor any per-GPU
Python code pays). The fleet is realistic: mostly warm GPUs, some hot, some melting, a few stale,
with the per-GPU memory of a previous tick, so every branch of the thermal tracking runs.

    python bench/decide.py [--gpus 10000] [--repeat 15]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from meltguard.api.state import ControllerState
from meltguard.api.validation import parse_spec
from meltguard.core.decide import decide
from meltguard.core.observation import GpuSample, Observation

NOW = 1_750_000_000.0


def make_fleet(gpus: int, seed: int = 7) -> Observation:
    rng = random.Random(seed)
    samples = []
    for index in range(gpus):
        hot = rng.random() < 0.2
        samples.append(GpuSample(
            uuid=f"GPU-{index:05d}", node=f"node-{index // 8}", namespace="inference",
            pod=f"imagegen-worker-{index // 8}",
            utilization=rng.uniform(0.9, 1.0) if hot else rng.uniform(0.4, 0.8),
            temperature_celsius=rng.uniform(84, 92) if hot else rng.uniform(55, 75),
            memory_used_bytes=rng.uniform(40e9, 70e9), memory_total_bytes=80e9,
            sampled_at=NOW - (60 if rng.random() < 0.01 else rng.uniform(0, 5)),
            throttle_reasons=frozenset({"sw_thermal"}) if rng.random() < 0.03 else frozenset(),
        ))
    return Observation(tuple(samples), current_replicas=gpus // 8, pending_replicas=0)


def median_seconds(action: Callable[[], object], repeat: int) -> float:
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def bare_loop(observation: Observation) -> float:
    total = 0.0
    for sample in observation.samples:
        total += sample.utilization + sample.temperature_celsius + sample.sampled_at
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    spec = parse_spec({
        "scaleTargetRef": {"name": "imagegen-worker"}, "minReplicas": 2, "maxReplicas": 2000,
        "quotas": {"tiers": [{"name": "free", "limit": 3}, {"name": "plus", "limit": 200},
                             {"name": "pro", "unlimited": True}]},
    })
    observation = make_fleet(args.gpus)
    warm_state = decide(spec, ControllerState.initial(), observation, now=NOW - 20).state
    decide_s = median_seconds(lambda: decide(spec, warm_state, observation, now=NOW), args.repeat)
    baseline_s = median_seconds(lambda: bare_loop(observation), args.repeat)
    round_trip_s = median_seconds(lambda: ControllerState.from_dict(warm_state.to_dict()),
                                  args.repeat)
    per_sample_us = decide_s / args.gpus * 1e6
    print(f"GPUs per decide():              {args.gpus}")
    print(f"decide() median:                {decide_s * 1e3:8.2f} ms")
    print(f"per GPU sample:                 {per_sample_us:8.3f} us   (target <= 2 us)")
    print(f"baseline bare loop per sample:  {baseline_s / args.gpus * 1e6:8.3f} us"
          f"   (decide = {decide_s / baseline_s:.1f}x the bare loop)")
    print(f"state round-trip via status:    {round_trip_s * 1e3:8.2f} ms"
          f"   ({len(warm_state.melting_since) + len(warm_state.hot_since)} GPUs remembered)")
    print(f"verdict: {'PASS' if per_sample_us <= 2 else 'MISS'} (2 us per sample target)")


if __name__ == "__main__":
    main()
