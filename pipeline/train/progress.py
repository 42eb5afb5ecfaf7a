"""Throughput, data-loading time against compute time, and the ETA: what a user watches to see whether the
loader starves the GPUs."""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Any

STARVED = 0.25  # an epoch that waits on data for more than this share of its time gets a warning


@dataclass
class EpochClock:
    """Seconds spent waiting for the next batch and computing the step, summed over an epoch's steps."""

    images_per_step: int  # global: every rank's images in one optimiser step
    data_s: float = 0.0
    compute_s: float = 0.0
    steps: int = 0
    _mark: float = 0.0

    def start(self) -> None:
        self._mark = time.perf_counter()

    def data_ready(self) -> None:
        now = time.perf_counter()
        self.data_s += now - self._mark
        self._mark = now

    def step_done(self) -> None:
        now = time.perf_counter()
        self.compute_s += now - self._mark
        self._mark = now
        self.steps += 1

    @property
    def seconds(self) -> float:
        return self.data_s + self.compute_s

    @property
    def images_per_second(self) -> float:
        return self.steps * self.images_per_step / self.seconds if self.seconds > 0 else 0.0

    @property
    def data_fraction(self) -> float:
        return self.data_s / self.seconds if self.seconds > 0 else 0.0

    def eta(self, steps_left: int) -> float:
        return steps_left * self.seconds / self.steps if self.steps else float("nan")

    def record(self) -> dict[str, float]:
        return {"images_per_second": self.images_per_second, "data_seconds": self.data_s,
                "compute_seconds": self.compute_s, "data_wait_fraction": self.data_fraction}

    def postfix(self, steps_left: int) -> dict[str, str]:
        return {"img/s": f"{self.images_per_second:,.0f}", "data": f"{100 * self.data_fraction:.0f}%",
                "eta": duration(self.eta(steps_left))}


def duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "?"
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def starvation_warning(clock: EpochClock, workers: int | None, kind: str) -> str | None:
    if clock.data_fraction <= STARVED:
        return None
    fix = f"raise --workers (now {workers})" if kind == "stream" else "use --loader stream with more --workers"
    return (f"warning: the loader starved the model: {100 * clock.data_fraction:.0f}% of step time was spent waiting "
            f"for data; {fix}")


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, leave=False, file=sys.stderr)
