"""Step timing of a training run: throughput after the first steps, and when ``time_budget`` re-plans."""

from __future__ import annotations

from dataclasses import dataclass

#: steps excluded from the throughput (first-call overheads), when the run is long enough
WARM_STEPS = 2
#: steps after the warm-up ones that first measure the step time for ``time_budget``
CALIBRATION_STEPS = 10


def is_calibration_step(n: int) -> bool:
    """``time_budget`` re-plans after 10, 20, 40, 80... steps past the warm-up."""
    if n < CALIBRATION_STEPS or n % CALIBRATION_STEPS:
        return False
    k = n // CALIBRATION_STEPS
    return k & (k - 1) == 0


@dataclass
class Clock:
    """Seconds spent in optimizer steps: in all, and by the end of the warm-up steps."""

    train: float = 0.0
    warm: float | None = None

    def add(self, seconds: float, done: int) -> None:
        """Count a step that took ``seconds``, the ``done``-th of this process."""
        self.train += seconds
        if done == WARM_STEPS:
            self.warm = self.train

    def throughput(self, tokens_per_step: int, done: int) -> float:
        """Training tokens per second, over the steps after the first ``WARM_STEPS`` when possible."""
        if self.warm is not None and done > 2 * WARM_STEPS and self.train > self.warm:
            return tokens_per_step * (done - WARM_STEPS) / (self.train - self.warm)
        return tokens_per_step * done / self.train if self.train > 0 else 0.0
