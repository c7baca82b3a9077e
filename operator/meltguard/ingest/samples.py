"""From the table's columns to the core's :class:`GpuSample` values, built column-wise.

An ingest builds ten thousand samples, so the checks that span quantities (memory used
against the total, a GPU missing a core quantity) run on whole columns, and only GPUs with
a missing or inconsistent value are visited one by one. Columns are taken by quantity name
and sample fields are filled by field name, so no list of positions has to stay in step
with :data:`~.schema.COLUMNS` or with ``GpuSample``.
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Sequence
from typing import cast

from meltguard.core.observation import GpuSample
from meltguard.ingest.schema import COLUMNS, CORE_QUANTITIES, GpuIdentity

#: Quantities a sample carries as they are (the core ones are zeroed for a GPU reported down).
_SAMPLE_QUANTITIES = (
    *CORE_QUANTITIES,
    "slowdown_temperature_celsius",
    "power_watts",
    "power_limit_watts",
)


def samples_of(
    gpus: Sequence[GpuIdentity],
    columns: list[list[float | None]],
    *,
    reasons: list[frozenset[str]],
    sampled_at: float,
    rejected: Counter[str],
) -> list[GpuSample]:
    """One sample per GPU of ``gpus``, from table ``columns`` (in :data:`COLUMNS` order, one
    item per GPU) and the GPUs' active throttle reasons; drops are counted in ``rejected``."""
    column = dict(zip(COLUMNS, columns, strict=True))
    used, total = column["memory_used_bytes"], column["memory_total_bytes"]
    _fill_memory_total(
        used, total, free=column["memory_free_bytes"], reserved=column["memory_reserved_bytes"]
    )
    _drop_used_over_total(used, total, rejected)
    core = [column[quantity] for quantity in CORE_QUANTITIES]
    up = [True] * len(gpus)
    for gpu in _unusable(core, column["up"], rejected):
        up[gpu] = False
        for values in core:
            values[gpu] = 0.0
    fields: dict[str, Sequence[object]] = {
        **dict(zip(GpuIdentity._fields, zip(*gpus, strict=True), strict=True)),
        **{quantity: column[quantity] for quantity in _SAMPLE_QUANTITIES},
        "sampled_at": [sampled_at] * len(gpus),
        "throttle_reasons": reasons,
        "up": up,
    }
    # every field of GpuSample by name (a KeyError if one is added and not filled here);
    # tuple.__new__ builds each sample from its fields in GpuSample's own order without
    # NamedTuple's Python-level __new__
    rows = zip(*(fields[name] for name in GpuSample._fields), strict=True)
    new = tuple.__new__
    return cast(list[GpuSample], [new(GpuSample, row) for row in rows])


def _fill_memory_total(
    used: list[float | None],
    total: list[float | None],
    *,
    free: list[float | None],
    reserved: list[float | None],
) -> None:
    """dcgm-exporter serves no total: it is used + free + reserved."""
    if None in total:
        for gpu, (u, t, f, r) in enumerate(zip(used, total, free, reserved, strict=True)):
            if t is None and u is not None and f is not None:
                total[gpu] = u + f + (r or 0.0)


def _drop_used_over_total(
    used: list[float | None], total: list[float | None], rejected: Counter[str]
) -> None:
    """More memory used than there is: the used figure is wrong."""
    if None not in used and None not in total:
        known_used, known_total = cast(list[float], used), cast(list[float], total)
        if all(map(operator.le, known_used, known_total)):
            return
    for gpu, (u, t) in enumerate(zip(used, total, strict=True)):
        if u is not None and t is not None and u > t:
            used[gpu] = None
            rejected["out_of_range"] += 1


def _unusable(
    core: list[list[float | None]], up: list[float | None], rejected: Counter[str]
) -> set[int]:
    """GPUs reported down, or missing a core quantity (counted ``incomplete``)."""
    down = {gpu for gpu, flag in enumerate(up) if flag == 0.0} if 0.0 in up else set()
    incomplete = {
        gpu for column in core if None in column for gpu, v in enumerate(column) if v is None
    }
    if incomplete - down:
        rejected["incomplete"] += len(incomplete - down)
    return down | incomplete
