"""tegrastats: parse its lines, sample it while something runs, and summarise power, temperature and GPU clock.

tegrastats (Jetson only) prints one line per interval, e.g. on an Orin Nano (JetPack 6):

    05-15-2025 18:30:28 RAM 6982/7620MB (lfb 5x1MB) SWAP 2640/16384MB (cached 202MB) CPU [97%@1984,...,93%@247]
    EMC_FREQ 18%@3199 GR3D_FREQ 84%@[713] ... cpu@65.562C gpu@63.5C tj@65.562C ... VDD_IN 17946mW/15710mW
    VDD_CPU_GPU_CV 8896mW/7585mW VDD_SOC 3923mW/3515mW

The format moved between releases, and the parser takes each form found on real devices (tests/data/tegrastats):
power as `now/avg` or `now/avg/max` (JetPack 7: also temperatures as `now/max`), with or without `mW` (older
boards); `GR3D_FREQ X%@[MHz,...]` per GPC, `X%@MHz`, or on Thor `@[MHz,...]` with no load figure; CPU cores
`X%@MHz` or `off`; sensor names in either case, a powered-off sensor reading -256C (dropped). Fields it does not
know are ignored, never guessed.

Which rail is the whole module: VDD_IN (Orin Nano/NX, Xavier NX), VIN (some Thor images), POM_5V_IN (Nano, TX2);
where none exists (AGX Orin, most Thor lines) the summary reports the sum of the listed rails and says so: that
sum is not whole-board power.

Needs only the standard library (it runs on the device as well as on the workstation).
"""
from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import Self

# Rails that measure the whole module's input, in order of preference.
TOTAL_RAILS = ("VDD_IN", "VIN", "POM_5V_IN")
# Temperatures at or above this (any sensor, degrees C) are reported as close to thermal throttling. A warning
# threshold of ours, not NVIDIA's trip points (those are per module, in its device tree and thermal zones).
HOT_C = 90.0
# A GPU clock that moved by more than this fraction while the GPU was busy means DVFS or throttling changed it.
CLOCK_SPREAD = 0.10
BUSY_GPU_LOAD = 50  # percent; with no load figure (Thor) every sample counts

_TIME = re.compile(r"^\s*(\d\d-\d\d-\d{4} \d\d:\d\d:\d\d)\s")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB")
_CPU = re.compile(r"\bCPU \[([^\]]*)\](?:@(\d+))?")
_EMC = re.compile(r"\bEMC_FREQ (\d+)%(?:@(\d+))?")
_GR3D = re.compile(r"\bGR3D_FREQ (?:(\d+)%)?(?:@\[([\d,]*)\]|@(\d+))?")
_TEMP = re.compile(r"(?<![\w@.%])([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C(?:/(-?\d+(?:\.\d+)?)C)?")
_RAIL = re.compile(
    r"\b((?:VDD|VIN|POM|VDDQ)[A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?(?=\s|$)"
)
OFF_SENSOR_C = -256.0


@dataclass(frozen=True)
class Rail:
    now_mw: int
    avg_mw: int
    max_mw: int | None = None


@dataclass(frozen=True)
class Core:
    load: int | None  # percent; None when the core is off
    mhz: int | None


@dataclass
class Sample:
    """One tegrastats line. Absent fields stay None/empty: nothing is filled in."""

    time: dt.datetime | None = None
    ram_used_mb: int | None = None
    ram_total_mb: int | None = None
    swap_used_mb: int | None = None
    swap_total_mb: int | None = None
    cpus: list[Core] = field(default_factory=list)
    emc_load: int | None = None
    emc_mhz: int | None = None
    gpu_load: int | None = None  # GR3D_FREQ percent (absent on Thor)
    gpu_mhz: list[int] = field(default_factory=list)  # per GPC
    temps: dict[str, float] = field(default_factory=dict)  # lower-case sensor name -> degrees C (now)
    rails: dict[str, Rail] = field(default_factory=dict)

    @property
    def gpu_clock(self) -> int | None:
        return max(self.gpu_mhz) if self.gpu_mhz else None

    def total_power(self) -> tuple[float | None, str]:
        """(watts, which rail or 'sum of rails') for this sample."""
        for name in TOTAL_RAILS:
            if name in self.rails:
                return self.rails[name].now_mw / 1000.0, name
        if self.rails:
            return sum(r.now_mw for r in self.rails.values()) / 1000.0, "sum of rails"
        return None, "no rails"


def parse_line(line: str) -> Sample | None:
    """One tegrastats line, or None when the line is not one (empty, a message, ...)."""
    if not _RAM.search(line) and not _RAIL.search(line):
        return None
    s = Sample()
    if m := _TIME.match(line):
        try:
            s.time = dt.datetime.strptime(m.group(1), "%m-%d-%Y %H:%M:%S")
        except ValueError:
            s.time = None
    if m := _RAM.search(line):
        s.ram_used_mb, s.ram_total_mb = int(m.group(1)), int(m.group(2))
    if m := _SWAP.search(line):
        s.swap_used_mb, s.swap_total_mb = int(m.group(1)), int(m.group(2))
    if m := _CPU.search(line):
        shared = int(m.group(2)) if m.group(2) else None  # old form: CPU [X%,Y%]@Z
        for item in m.group(1).split(","):
            item = item.strip()
            if not item:
                continue
            if item == "off":
                s.cpus.append(Core(None, None))
                continue
            cm = re.match(r"(\d+)%(?:@(\d+))?", item)
            if cm:
                s.cpus.append(Core(int(cm.group(1)), int(cm.group(2)) if cm.group(2) else shared))
    if m := _EMC.search(line):
        s.emc_load = int(m.group(1))
        s.emc_mhz = int(m.group(2)) if m.group(2) else None
    if m := _GR3D.search(line):
        s.gpu_load = int(m.group(1)) if m.group(1) is not None else None
        if m.group(2):
            s.gpu_mhz = [int(x) for x in m.group(2).split(",") if x]
        elif m.group(3):
            s.gpu_mhz = [int(m.group(3))]
    for m in _TEMP.finditer(line):
        value = float(m.group(2))
        if value <= OFF_SENSOR_C:
            continue  # the sensor is powered off
        s.temps[m.group(1).lower()] = value
    for m in _RAIL.finditer(line):
        s.rails[m.group(1)] = Rail(int(m.group(2)), int(m.group(3)), int(m.group(4)) if m.group(4) else None)
    return s


def parse(lines: Iterable[str]) -> list[Sample]:
    return [s for s in (parse_line(x) for x in lines) if s is not None]


def parse_file(path: str | os.PathLike[str]) -> list[Sample]:
    with open(path, encoding="utf-8", errors="replace") as f:
        return parse(f)


# ---------------------------------------------------------------------------------------------- summary
def _mean(xs: Sequence[float]) -> float | None:
    return float(statistics.fmean(xs)) if xs else None


def summarize(samples: Sequence[Sample], interval_s: float | None = None, hot_c: float = HOT_C) -> dict[str, Any]:
    """Power per rail, the module total, temperatures, GPU load and clock, and warnings (throttling, heat).

    Power figures are the means of the per-sample `now` readings, in watts; `duration_s` comes from the lines'
    timestamps (1 s resolution) or, without them, from the sample count times `interval_s`.
    """
    out: dict[str, Any] = {"samples": len(samples), "warnings": []}
    if not samples:
        out["warnings"].append("no tegrastats samples: no power, temperature or clock figures")
        return out
    times = [s.time for s in samples if s.time is not None]
    if len(times) >= 2:
        out["duration_s"] = (max(times) - min(times)).total_seconds() + (interval_s or 1.0)
    elif interval_s:
        out["duration_s"] = len(samples) * interval_s
    rails: dict[str, list[int]] = {}
    for s in samples:
        for name, r in s.rails.items():
            rails.setdefault(name, []).append(r.now_mw)
    out["rails_w"] = {name: {"mean": round(_mean(v) / 1000.0, 3), "max": max(v) / 1000.0}  # type: ignore[operator]
                      for name, v in rails.items()}
    totals = [s.total_power() for s in samples]
    watts = [w for w, _ in totals if w is not None]
    sources = sorted({src for w, src in totals if w is not None})
    if watts:
        out["power_w"] = {"mean": round(float(statistics.fmean(watts)), 3), "max": max(watts),
                          "source": ", ".join(sources), "whole_module": all(src in TOTAL_RAILS for src in sources)}
        if not out["power_w"]["whole_module"]:
            out["warnings"].append(
                f"no whole-module rail ({'/'.join(TOTAL_RAILS)}) in tegrastats: power is the sum of "
                f"{', '.join(sorted(rails))}, not the board's input power")
    temps: dict[str, float] = {}
    for s in samples:
        for name, t in s.temps.items():
            temps[name] = max(temps.get(name, t), t)
    out["temps_max_c"] = dict(sorted(temps.items()))
    if temps:
        hottest = max(temps, key=lambda k: temps[k])
        out["temp_max_c"] = {"sensor": hottest, "value": temps[hottest]}
        if temps[hottest] >= hot_c:
            out["warnings"].append(f"{hottest} reached {temps[hottest]:.1f} C during the run (>= {hot_c:.0f} C): "
                                   "close to thermal throttling, latency may be throttled; improve cooling")
    loads = [s.gpu_load for s in samples if s.gpu_load is not None]
    if loads:
        out["gpu_load_pct"] = {"mean": round(float(statistics.fmean(loads)), 1), "max": max(loads)}
    clocks = [(s.gpu_clock, s.gpu_load) for s in samples if s.gpu_clock is not None]
    if clocks:
        # busy samples: load >= 50 %, or (Thor, no load figure) a clocked, not power-gated, GPU
        busy = [c for c, load in clocks if (load is None and c > 0) or (load is not None and load >= BUSY_GPU_LOAD)]
        shown = busy or [c for c, _ in clocks]
        out["gpu_clock_mhz"] = {"min": min(shown), "max": max(shown), "mean": round(float(statistics.fmean(shown)), 1),
                                "busy_samples": len(busy)}
        hi, lo = (max(busy), min(busy)) if busy else (0, 0)
        if hi > 0 and (hi - lo) / hi > CLOCK_SPREAD:
            out["warnings"].append(
                f"GPU clock varied between {lo} and {hi} MHz while busy: DVFS or throttling changed it during the "
                "run; lock clocks with `sudo jetson_clocks` for stable latency")
    ram = [s.ram_used_mb for s in samples if s.ram_used_mb is not None]
    if ram:
        out["ram_used_mb_max"] = max(ram)
        out["ram_total_mb"] = next(s.ram_total_mb for s in samples if s.ram_total_mb is not None)
    swap = [s.swap_used_mb for s in samples if s.swap_used_mb is not None]
    if swap and max(swap) > min(swap):
        out["warnings"].append(f"swap use grew from {min(swap)} to {max(swap)} MB during the run: the device is "
                               "short of memory, latency includes paging")
    return out


def energy_per_image_mj(power_w: float | None, ms_per_batch: float | None, batch: int | None) -> float | None:
    """Energy per image in millijoules: mean power times the time one image takes (p50 latency / batch)."""
    if power_w is None or ms_per_batch is None or not batch:
        return None
    return power_w * float(ms_per_batch) / float(batch)


# ---------------------------------------------------------------------------------------------- sampling
class Sampler:
    """Runs `tegrastats --interval MS` while a block runs, keeps its lines (and writes them to `logfile`).

    `available` is False, with `reason`, where tegrastats is not installed (anything but a Jetson): the caller
    reports that, it never fakes figures. Use as a context manager; `samples()` parses what was collected.
    """

    def __init__(self, interval_ms: int = 200, logfile: str | os.PathLike[str] | None = None,
                 executable: str | None = None) -> None:
        self.interval_ms = int(interval_ms)
        self.logfile = Path(logfile) if logfile is not None else None
        self.executable = executable or shutil.which("tegrastats")
        self.available = self.executable is not None
        self.reason = None if self.available else "tegrastats not found on PATH (not a Jetson?)"
        self.lines: list[str] = []
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._log: IO[str] | None = None
        self.started: float | None = None
        self.stopped: float | None = None

    def start(self) -> Self:
        if not self.available or self._proc is not None:
            return self
        assert self.executable is not None
        if self.logfile is not None:
            self.logfile.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.logfile, "w", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen([self.executable, "--interval", str(self.interval_ms)], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.started = time.monotonic()
        self._reader = threading.Thread(target=self._read, name="tegrastats", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if self._log is not None:
                self._log.write(line)
                self._log.flush()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        self.stopped = time.monotonic()
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def samples(self) -> list[Sample]:
        return parse(self.lines)

    def summary(self) -> dict[str, Any]:
        if not self.available:
            return {"samples": 0, "available": False, "reason": self.reason, "warnings": [self.reason]}
        out = summarize(self.samples(), self.interval_ms / 1000.0)
        out["available"] = True
        return out


def shell_wrap(command: str, logfile: str, interval_ms: int | str = 200) -> str:
    """A POSIX-sh fragment that runs `command` with tegrastats sampling into `logfile` where tegrastats exists
    (its absence is written to `logfile.absent`, never faked), stopping only the sampler it started."""
    return (
        f"if command -v tegrastats >/dev/null 2>&1; then "
        f"tegrastats --interval {interval_ms} --logfile {logfile} & ts_pid=$!; "
        f"else echo 'tegrastats not found on the device (not a Jetson?): no power, temperature or clock "
        f"figures' > {logfile}.absent; ts_pid=; fi; "
        f"( {command} ); rc=$?; "
        f"if [ -n \"$ts_pid\" ]; then kill \"$ts_pid\" 2>/dev/null; wait \"$ts_pid\" 2>/dev/null; fi; "
        f"exit $rc"
    )
