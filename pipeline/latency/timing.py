"""The timing harness: every runner timed the same way, and the statistics of what it measured.

Each case is a `step()` that runs one inference (and returns per-stage times in ms, or None). Cases are warmed up
by time, then measured by time with a minimum number of iterations, in interleaved rounds: round r runs case A
for its share of the duration, then B, then C, ..., then round r+1 does the same (A B C A B C ...), so drift of a
shared machine (clock boosts, a neighbour's load) hits every case alike instead of whichever ran last.

Statistics per case: p50/p90/p95/p99 (linear interpolation between order statistics, numpy's default), mean, and
the coefficient of variation std/mean (population std, as trtexec computes it); a case whose CV exceeds 2.5% is
flagged `noisy`, trtexec's rule for an unstable clock. Throughput is batch / mean latency.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

NOISY_CV = 0.025  # trtexec warns of an unstable GPU clock above a 2.5% coefficient of variation
PERCENTILES = (50, 90, 95, 99)

StepFn = Callable[[], "Sequence[float] | None"]


@dataclass(frozen=True)
class TimingSettings:
    warmup_s: float = 0.5
    duration_s: float = 2.0
    min_iters: int = 20
    rounds: int = 4  # interleaving rounds: each case gets duration_s / rounds and min_iters / rounds per round
    noisy_cv: float = NOISY_CV

    def __post_init__(self) -> None:
        from ..errors import ConfigError

        if self.warmup_s < 0 or self.duration_s <= 0:
            raise ConfigError(f"--warmup-s {self.warmup_s} / --duration-s {self.duration_s}: pass a warm-up >= 0 and "
                              "a positive duration, e.g. --warmup-s 0.5 --duration-s 2")
        if self.min_iters < 1 or self.rounds < 1:
            raise ConfigError(f"--min-iters {self.min_iters} / --rounds {self.rounds}: pass positive counts, e.g. "
                              "--min-iters 20 --rounds 4")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Stats:
    iterations: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    cv: float
    noisy: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


STATS_KEYS = tuple(Stats.__dataclass_fields__)


def summarize(samples_ms: Sequence[float], noisy_cv: float = NOISY_CV) -> Stats:
    """Statistics of one case's latencies in milliseconds."""
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0:
        raise ValueError("internal: no samples to summarize")
    mean = float(x.mean())
    cv = float(x.std() / mean) if mean > 0 else 0.0
    p = [float(v) for v in np.percentile(x, PERCENTILES)]
    return Stats(int(x.size), p[0], p[1], p[2], p[3], mean, cv, cv > noisy_cv)


@dataclass
class Case:
    """One thing to time. `step()` runs one inference and returns per-stage times in ms (or None); the harness
    times the whole step on the host clock (end to end).

    On a GPU, what is recorded inside the timed step must cost every case the same: `device_time()` (called after
    each timed step, outside the host clock) reads the ONE pair of CUDA events around the whole step, and
    `stage_step()` (run in iterations of its own, untimed on the host) records an event per stage, so a stage
    chain is not timed with more events than the fused graph it is compared with."""

    key: dict[str, Any]
    step: StepFn
    batch: int
    device_time: Callable[[], float] | None = None
    stage_step: Callable[[], Sequence[float]] | None = None
    samples: list[float] = field(default_factory=list)
    stage_samples: list[list[float]] = field(default_factory=list)
    device_samples: list[float] = field(default_factory=list)

    def result(self, noisy_cv: float = NOISY_CV) -> dict[str, Any]:
        e2e = summarize(self.samples, noisy_cv)
        stages = None
        if self.stage_samples:
            per_stage = np.asarray(self.stage_samples, dtype=np.float64).T
            stages = [summarize(s, noisy_cv).to_dict() for s in per_stage]
        device = summarize(self.device_samples, noisy_cv).to_dict() if self.device_samples else None
        return {**self.key, "batch": self.batch, "end_to_end": e2e.to_dict(), "stages": stages, "gpu": device,
                "throughput_ips": self.batch / (e2e.mean_ms / 1e3) if e2e.mean_ms > 0 else None}


def run_interleaved(cases: Sequence[Case], settings: TimingSettings, tick: Callable[[], None] | None = None,
                    clock: Callable[[], float] = time.perf_counter) -> list[int]:
    """Warm every case up, then measure them in interleaved rounds; returns the order the cases ran in (the
    case index of each measured slot). `tick()` is called after each warm-up and each slot (progress)."""
    for case in cases:
        end = clock() + settings.warmup_s
        case.step()  # at least once: lazy initialisation (first-run allocation, TensorRT-RTX's JIT) lands here
        while clock() < end:
            case.step()
        if tick:
            tick()
    slot_s = settings.duration_s / settings.rounds
    slot_iters = math.ceil(settings.min_iters / settings.rounds)
    order: list[int] = []
    for _ in range(settings.rounds):
        for i, case in enumerate(cases):
            order.append(i)
            end = clock() + slot_s
            n = 0
            while n < slot_iters or clock() < end:
                t0 = clock()
                stages = case.step()
                case.samples.append((clock() - t0) * 1e3)
                if stages is not None:
                    case.stage_samples.append(list(stages))
                if case.device_time is not None:
                    case.device_samples.append(case.device_time())
                n += 1
            if case.stage_step is not None:  # per-stage times in iterations of their own, after the timed ones
                case.stage_samples += [list(case.stage_step()) for _ in range(n)]
            if tick:
                tick()
    return order


def slots(n_cases: int, settings: TimingSettings) -> int:
    """How many times run_interleaved calls tick()."""
    return n_cases * (1 + settings.rounds)


# ---------------------------------------------------------------------------------------------- CPU pinning
def pin_cpus(threads: int | None) -> list[int] | None:
    """Pin this thread (and every thread it creates afterwards: ONNX Runtime's pools) to the first `threads` CPUs
    it may run on; returns them, or None where the OS has no sched_setaffinity (macOS, Windows)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    cpus = allowed[: threads or len(allowed)]
    os.sched_setaffinity(0, cpus)
    return cpus


def cpu_affinity() -> list[int] | None:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def restore_cpus(cpus: Sequence[int] | None) -> None:
    if cpus is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, list(cpus))


# ---------------------------------------------------------------------------------------------- step makers
class StageTimes:
    """Per-stage wall clock of a runners.chain.StageChain: each stage runner wrapped by `wrap()`, its infer timed
    inside the chain; `take()` returns and clears the times of the last run."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.times: list[float] = []

    def wrap(self, runner: Any) -> Any:
        from ..runners.base import Runner

        owner = self

        class Timed(Runner):
            name = runner.name
            batch = runner.batch

            @property
            def input_names(self) -> list[str]:
                return list(runner.input_names)

            @property
            def output_names(self) -> list[str]:
                return list(runner.output_names)

            def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
                t0 = owner.clock()
                out = runner.infer(feeds)
                owner.times.append((owner.clock() - t0) * 1e3)
                return dict(out)

            def close(self) -> None:
                runner.close()

        return Timed()

    def take(self) -> list[float]:
        t, self.times = self.times, []
        return t
