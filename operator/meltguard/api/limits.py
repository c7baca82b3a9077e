"""A limit in force, which may be fractional, and the whole limit it gives each subject.

Tiers' baselines and floors count whole images, but the limit in force may sit between two
whole numbers: ``1.4`` means every subject may make one image in the window and 40 % of the
subjects a second one. Which subjects get the extra image follows from a hash of the subject
and the window, so a subject meets the same limit on every request of a window (a refused
retry stays refused) and the lucky share is drawn again each window. Demand-aware quotas use
this to set the admitted load anywhere between two whole limits: in a surge, one image more
per new user can be half of a fleet.
"""

from __future__ import annotations

import hashlib
import math
from typing import Annotated

from pydantic import AfterValidator, Field, WithJsonSchema

#: Decimals a limit in force may carry: enough to set the admitted load to a percent of a step.
LIMIT_DECIMALS = 2
#: Largest limit a document may give: Redis counts in signed 64-bit integers.
MAX_COUNT = 2**63 - 1


def normalized_limit(value: int | float) -> int | float:
    """``value`` as the resource carries it: whole numbers as ints, else at most
    :data:`LIMIT_DECIMALS` decimals (refused otherwise: the quota service would round it)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"a limit must be a finite number, not {value}")
        if value.is_integer():
            return int(value)
        if round(value, LIMIT_DECIMALS) != value:
            raise ValueError(f"a limit carries at most {LIMIT_DECIMALS} decimals, not {value}")
    return value


#: A limit in force: a whole number, or a number with at most two decimals.
LimitInForce = Annotated[
    int | float,
    Field(ge=0, le=MAX_COUNT),
    AfterValidator(normalized_limit),
    WithJsonSchema({"type": "number", "minimum": 0}),
]


def round_limit(value: float) -> int | float:
    """``value`` rounded down to a limit the resource can carry (never above ``value``)."""
    scale = 10**LIMIT_DECIMALS
    return normalized_limit(math.floor(value * scale + 1e-9) / scale)


def subject_share(key: str, subject: str, window_start: float) -> float:
    """Where ``subject`` falls in [0, 1) for the window starting at ``window_start``:
    uniform over subjects, the same on every request of the window, drawn again the next.
    ``key`` names the policy and tier, so tiers draw independently."""
    digest = hashlib.blake2b(
        f"{key}\x00{subject}\x00{int(window_start)}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") / 2**64


def subject_limit(limit: int | float, share: float) -> int:
    """The whole limit of a subject at ``share`` (see :func:`subject_share`): ``floor(limit)``,
    plus one when ``share`` falls below the fractional part."""
    whole = math.floor(limit)
    return whole + 1 if share < limit - whole else whole
