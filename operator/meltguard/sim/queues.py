"""Requests waiting in front of each GPU, first in first out, until served or timed out.

Each serving GPU has its own queue (its pod's): the Service spreads the admitted requests of a
step evenly over the serving GPUs, whatever their backlog or speed, as kube-proxy does. A GPU
serves its oldest requests first. Requests are fluid (fractions of an image), kept per GPU by
age in whole steps; the tiers' shares of each age's requests are the same on every GPU (the
spread is even), so they are kept once per age.

Timing within a step: requests of a step arrive spread over it (on average half-way), and a
GPU works through its capacity evenly over the step, so a chunk whose middle is served at
position ``p`` (0..1) of the step ``k`` steps after it arrived waited ``(k - 0.5 + p) * step``
seconds (0 at least). The answer takes that wait plus the time of making the image at the
GPU's clocks; it is *within the SLO* when that is less than the scenario's
``latencySloSeconds``. A request is served at most :func:`max_age_steps` steps after its
arrival step; what is left then has waited about ``requestTimeoutSeconds`` and fails (the
client gave up).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def max_age_steps(timeout_seconds: float, step_seconds: float) -> int:
    """The last step (counted from the arrival step, 0) in which a request may be served:
    after it, its mean wait ``(age + 0.5) * step`` would exceed the timeout."""
    return max(0, math.ceil(timeout_seconds / step_seconds - 0.5))


class GpuQueues:
    """The queues of a fleet's GPUs: ``backlog[row, gpu]`` images and ``mix[row, tier]``
    shares, rows from the oldest age (:attr:`oldest` steps) to the newest (0).

    Methods take the first ``span`` GPUs only (the fleet places replicas on the lowest free
    GPUs, so those past the last one held have nothing queued).
    """

    def __init__(self, gpus: int, *, tiers: int, step_seconds: float,
                 timeout_seconds: float, slo_seconds: float) -> None:
        self.oldest = max_age_steps(timeout_seconds, step_seconds)
        self.backlog = np.zeros((self.oldest + 1, gpus))
        self._mix = np.zeros((self.oldest + 1, tiers))
        self._step = step_seconds
        self._slo = slo_seconds
        # the mean wait of each row's requests when a step begins: (age - 0.5) steps
        self._waited_before_step = (np.arange(self.oldest, -1, -1.0)[:, None] - 0.5) \
            * step_seconds
        #: images answered within the SLO so far
        self.answered_within_slo = 0.0

    def admit(self, admitted: npt.NDArray[np.int64], serving: BoolArray) -> FloatArray:
        """Age the queues one step and spread a step's admitted requests (per tier) over the
        ``serving`` GPUs; returns what fails at once because no GPU serves."""
        span = len(serving)
        self.backlog[:-1, :span] = self.backlog[1:, :span]
        self._mix[:-1] = self._mix[1:]
        total = float(sum(admitted.tolist()))  # whole requests: any order sums them exactly
        servers = int(np.count_nonzero(serving))
        if total > 0 and servers > 0:
            self.backlog[-1, :span] = serving * (total / servers)
            self._mix[-1] = admitted / total
            return np.zeros(len(admitted))
        self.backlog[-1, :span] = 0.0
        self._mix[-1] = 0.0
        return admitted.astype(np.float64)

    def wanted(self, span: int) -> FloatArray:
        """Images waiting at each of the first ``span`` GPUs."""
        wanted: FloatArray = self.backlog[:, :span].sum(axis=0)
        return wanted

    def serve(self, capacity: FloatArray, making_seconds: FloatArray | float
              ) -> tuple[FloatArray, FloatArray]:
        """Each GPU serves up to ``capacity`` images, oldest first; an image takes
        ``making_seconds`` (per GPU, or for all) to make. Returns images served per GPU and
        per tier."""
        backlog = self.backlog[:, :len(capacity)]
        if not backlog[:-1].any() and (backlog[-1] <= capacity).all():
            return self._serve_all_new(backlog[-1], making_seconds)
        return self._serve_in_order(backlog, capacity, making_seconds)

    def _serve_in_order(self, backlog: FloatArray, capacity: FloatArray,
                        making_seconds: FloatArray | float) -> tuple[FloatArray, FloatArray]:
        """:meth:`serve` in general: every age, oldest first, within each GPU's capacity."""
        done = np.cumsum(backlog, axis=0)
        np.minimum(done, capacity, out=done)
        chunks = done.copy()
        chunks[1:] -= done[:-1]
        backlog -= chunks
        middle = (done - 0.5 * chunks) * (self._step / np.maximum(capacity, 1e-12))
        answered = np.maximum(0.0, self._waited_before_step + middle) + making_seconds
        self.answered_within_slo += float(chunks.sum(where=answered < self._slo))
        per_tier: FloatArray = chunks.sum(axis=1) @ self._mix
        return done[-1], per_tier

    def _serve_all_new(self, newest: FloatArray, making_seconds: FloatArray | float
                       ) -> tuple[FloatArray, FloatArray]:
        """:meth:`serve` when nothing older waits and every GPU keeps up (most steps of a
        day): all of this step's requests are served without waiting."""
        served = newest.copy()
        newest[:] = 0.0
        total = float(served.sum())
        if isinstance(making_seconds, np.ndarray):
            self.answered_within_slo += float(
                served.sum(where=np.less(making_seconds, self._slo)))
        elif making_seconds < self._slo:  # one speed for all: all within the SLO, or none
            self.answered_within_slo += total
        return served, total * self._mix[-1]

    def expire(self, span: int) -> FloatArray:
        """Fail what is left of the oldest age (per tier) at the first ``span`` GPUs."""
        failed: FloatArray = self.backlog[0, :span].sum() * self._mix[0]
        self.backlog[0, :span] = 0.0
        return failed

    def drop(self, gpus: list[int]) -> FloatArray:
        """Empty the queues of GPUs whose pod went away; their requests fail (per tier)."""
        failed: FloatArray = self.backlog[:, gpus].sum(axis=1) @ self._mix
        self.backlog[:, gpus] = 0.0
        return failed
