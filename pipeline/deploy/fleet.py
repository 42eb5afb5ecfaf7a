"""`dvit deploy` to a fleet: the same graph set to many devices, a bounded number at once, ending with one table.

    dvit deploy --graphs DIR --target NAME --host A --host B [...] [--hosts FILE] [--parallel N]
                [--no-share-engines] [every option of a single deploy]

--hosts FILE lists one device a line, `user@host[:port] [target]`; `#` starts a comment and blank lines are skipped;
a line without a target takes --target. A bad line stops the run before any device is touched, with one line
naming FILE:LINE and the expected form; so does a device listed twice (two deploys into one remote directory
would race).

Each device is one `deploy()` with its own DeployOptions (host, port, target and local results folder; every other
option is the same for all, and a port on the line wins over --port), so each keeps its own releases, `current`
and engine cache in its --remote-dir. At most --parallel deploys run at once. Everything a device's deploy says is
prefixed with the device (`[user@host:port] ...`), line by line, so parallel output stays readable; with
--no-progress only each device's result lines (when it ends) and the table are printed. A device that fails (any
exception) becomes a failed row with its one-line error and never stops the others.

Results: OUT/fleet-<YYYYmmdd-HHMMSS>/ holds fleet.json and fleet.md (the table; written atomically) and one folder
per device, <host>[_<port>]-<target>/, in which its deploy writes its results as a single deploy does
(<host>-<target>-<release>/: deploy.json, summary.md, out/). The table: host, target, JetPack / TensorRT, result,
validation, latency p50 pruned / dense (smallest batch timed, host I/O, no CUDA graph; the faster of chain and
fused for the pruned model), mean power, engines (built / reused). The exit status is the number of failed devices
(at most 125), and the last line names them.

Shared engines (deploys that build, unless --no-share-engines): first every device's facts are read with the
preflight script (reads only; a device that cannot be reached fails there, with deploy's own one-line error).
Devices of the same target, backend version and GPU compute capability form a group; the first device of a group
deploys first and builds. Then the engine cache entries its release used (plan and record, from
ROOT/cache/build) and its plugin library (ROOT/cache/plugins/<key>) are fetched; each plan's header
(pipeline.backend.tensorrt.plan_header) is checked against each other member's backend version (and SMs, where a
TensorRT-RTX header lists them), each plan's sha256 against its record; what fits is seeded into that member's
ROOT/cache (plans before records, entries it already has kept; the plugin library only where the member's own
plugin cache key, render.plugin_key, is the leader's). The members then deploy as usual: `dvit build` reuses what
its engine cache key matches (graph, plugin library, exact backend version, target, SMs, builder settings) and
builds anything else, so engines are built once per group and never trusted blindly. A device whose version
differs is in another group and builds its own; when a group's first device fails, the others build their own.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import io
import json
import re
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .. import cli_args
from ..errors import ConfigError, DvitError
from ..io import atomic_write_json, atomic_write_text, ensure_writable_dir, sha256_file
from ..results.latency import pair_pruned_dense
from ..targets import Target, backend_label, load_target
from . import DeployResult, deploy, preflight, remote
from . import bundle as bundle_mod
from .options import DeployOptions
from .render import Renderer, plugin_archs, plugin_key
from .ssh import Remote, Ssh

__all__ = ["DEFAULT_PARALLEL", "FORMAT", "FleetResult", "FleetRow", "HostSpec", "add_arguments",
           "deploy_and_report", "deploy_fleet", "host_specs", "latency_p50", "main", "parse_hosts_file", "plan_fits"]

FORMAT = "dvit-edge/deploy-fleet/v1"
DEFAULT_PARALLEL = 4
MAX_EXIT = 125  # exit statuses above are the shell's (126, 127, signals)
LINE_FORM = "user@host[:port] [target]"
PLUGIN_LIB = "libdvit_trt_plugins.so"


# ---------------------------------------------------------------------------------------------- the host list
@dataclass(frozen=True)
class HostSpec:
    """One device of the fleet: `host` is user@host as ssh takes it (no port), `where` says where it was listed."""

    host: str
    port: int | None
    target: str
    where: str = "--host"

    @property
    def label(self) -> str:
        return self.host + (f":{self.port}" if self.port else "")

    @property
    def device(self) -> tuple[str, int]:
        """What makes two lines the same device: user, host name in any case, port (missing: ssh's 22)."""
        user, at, host = self.host.rpartition("@")
        return f"{user}{at}{host.lower()}", self.port or 22


def parse_host(spec: str, target: str, where: str = "--host") -> HostSpec:
    """`user@host[:port]` (also [v6addr]:port) for `target`; a bad one fails with one line naming `where`."""
    try:
        r = Remote.parse(spec)
    except ConfigError as e:
        if where == "--host":
            raise
        raise ConfigError(f"{where}: {spec!r} is not a device: expected `{LINE_FORM}`, e.g. "
                          "`nvidia@192.168.1.42 orin-nano`") from e
    host = f"[{r.host}]" if ":" in r.host else r.host
    return HostSpec(f"{r.user}@{host}" if r.user else host, r.port, target, where)


def parse_hosts_file(path: str | Path, default_target: str | None = None) -> list[HostSpec]:
    """The devices of a hosts file: one `user@host[:port] [target]` a line, `#` comments, blank lines skipped."""
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) else "not text"
        raise ConfigError(f"--hosts {p}: cannot read it ({why}): pass a file with one `{LINE_FORM}` a line") from None
    specs = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where, parts = f"{p}:{n}", line.split()
        if len(parts) > 2:
            raise ConfigError(f"{where}: {line!r} is not one device: expected `{LINE_FORM}` (one a line, e.g. "
                              "`nvidia@192.168.1.42:22 orin-nano`)")
        target = parts[1] if len(parts) == 2 else default_target
        if not target:
            raise ConfigError(f"{where}: {parts[0]} has no target and no --target was given: expected "
                              f"`{LINE_FORM}`, e.g. `{parts[0]} orin-nano`, or pass --target")
        specs.append(parse_host(parts[0], target, where))
    if not specs:
        raise ConfigError(f"--hosts {p}: no device in it: write one `{LINE_FORM}` a line")
    return specs


def host_specs(hosts: Sequence[str] = (), hosts_file: str | Path | None = None,
               default_target: str | None = None) -> list[HostSpec]:
    """The devices of repeated --host (each for --target) then of --hosts FILE, in order; each device once, and
    every target a known profile."""
    specs = []
    for h in hosts:
        if not default_target:
            raise ConfigError(f"--host {h}: no --target given: pass --target NAME (or list the device with its "
                              "target in --hosts FILE)")
        specs.append(parse_host(h, default_target))
    if hosts_file is not None:
        specs += parse_hosts_file(hosts_file, default_target)
    if not specs:
        raise ConfigError("no device: pass --host USER@HOST (repeat it for several) or --hosts FILE")
    seen: dict[tuple[str, int], HostSpec] = {}
    for s in specs:
        if (first := seen.get(s.device)) is not None:
            raise ConfigError(f"{s.where}: {s.label} is already listed ({first.where}): deploy to each device once "
                              "per run (two deploys into one remote directory would race)")
        seen[s.device] = s
    checked: set[str] = set()
    for s in specs:
        if s.target not in checked:
            try:
                load_target(s.target)
            except ConfigError as e:
                raise ConfigError(f"{s.where}: {e}") from None
            checked.add(s.target)
    return specs


# ---------------------------------------------------------------------------------------------- rows and table
@dataclass
class FleetRow:
    """One device's outcome, as the table and fleet.json show it."""

    host: str  # user@host[:port]
    target: str
    status: str  # ok, failed, dry-run
    error: str | None = None
    jetpack: str | None = None
    l4t: str | None = None
    backend: str | None = None  # "TensorRT", "TensorRT-RTX"
    backend_version: str | None = None
    validation: dict[str, Any] | None = None
    latency: dict[str, Any] | None = None
    power: dict[str, Any] | None = None
    engines: dict[str, Any] = field(default_factory=dict)  # built, reused, shared_from, seeded
    group: str | None = None
    release: str | None = None
    results_dir: str | None = None
    start_s: float = 0.0  # when its deploy began, seconds after the fleet's start
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def cells(self) -> list[str]:
        jp = f"JetPack {self.jetpack}" if self.jetpack else "-"
        be = f"{self.backend} {self.backend_version}" if self.backend and self.backend_version else "-"
        v = self.validation or {}
        passed = v.get("passed")
        validation = "passed" if passed is True else "FAILED" if passed is False else str(v.get("status") or "-")
        lat = self.latency or {}
        if lat.get("available"):
            def ms(x: Any) -> str:
                return f"{x:.2f}" if isinstance(x, (int, float)) else "-"
            latency = f"b{lat.get('batch')} {ms(lat.get('pruned_p50_ms'))} / {ms(lat.get('dense_p50_ms'))} ms"
        else:
            latency = "-"
        pw = self.power or {}
        power = f"{pw['mean_w']:.1f} W" if isinstance(pw.get("mean_w"), (int, float)) else "-"
        e = self.engines
        if isinstance(e.get("built"), int) and isinstance(e.get("reused"), int):
            engines = f"{e['built']} built, {e['reused']} reused"
            if e.get("shared_from"):
                engines += f" (from {e['shared_from']})"
        else:
            engines = "-"
        result = {"ok": "ok", "failed": "FAILED"}.get(self.status, self.status)
        return [self.host, self.target, f"{jp} / {be}", result, validation, latency, power, engines]


COLUMNS = ("host", "target", "JetPack / TensorRT", "result", "validation", "p50 pruned / dense", "power", "engines")


def render_table(rows: Sequence[FleetRow]) -> str:
    """The rows as an aligned text table (header, rule, one line per device)."""
    cells = [list(COLUMNS)] + [r.cells() for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(COLUMNS))).rstrip() for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown(rows: Sequence[FleetRow]) -> str:
    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += ["| " + " | ".join(c.replace("|", "/") for c in r.cells()) + " |" for r in rows]
    errors = [f"- {r.host}: {r.error}" for r in rows if r.error]
    return "\n".join(out + ([""] + errors if errors else [])) + "\n"


@dataclass
class FleetResult:
    rows: list[FleetRow]
    out: Path | None  # OUT/fleet-<time>/ (None for --dry-run: nothing is written)
    seconds: float
    parallel: int
    share_engines: bool
    groups: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [r.host for r in self.rows if r.status == "failed"]

    @property
    def exit_status(self) -> int:
        return min(len(self.failed), MAX_EXIT)

    def table(self) -> str:
        return render_table(self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "out": str(self.out) if self.out else None, "seconds": self.seconds,
                "parallel": self.parallel, "share_engines": self.share_engines, "failed": self.failed,
                "exit_status": self.exit_status, "groups": self.groups, "hosts": [r.to_dict() for r in self.rows]}

    def final_line(self) -> str:
        n = len(self.rows)
        if not self.failed:
            return f"dvit deploy: all {n} device{'s' if n != 1 else ''} deployed"
        return f"dvit deploy: {len(self.failed)} of {n} devices failed: {', '.join(self.failed)}"


# ---------------------------------------------------------------------------------------------- results
def latency_p50(path: Path) -> dict[str, Any] | None:
    """Pruned and dense p50 from a latency.json: the smallest batch timed, host I/O, no CUDA graph; the pruned
    figure is the faster of its chain and fused runs (its mode is recorded), the dense one its pair's. None when
    there is no file."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"available": False, "reason": f"{path.name} is unreadable"}
    runs = [r for r in data.get("runs") or [] if isinstance(r, dict)
            and isinstance((r.get("end_to_end") or {}).get("p50_ms"), (int, float))
            and r.get("io") in (None, "host") and not r.get("cuda_graph")]
    if not runs:
        why = [u.get("reason") or u.get("unavailable") for u in (data.get("unavailable") or [])
               + [r for r in data.get("runs") or [] if isinstance(r, dict) and r.get("unavailable")]]
        return {"available": False, "reason": next((w for w in why if w), "no timed run")}
    batch = min(int(r.get("batch") or 0) for r in runs)
    # pruned and dense paired by the one rule latency and the report use (results.latency.pair_pruned_dense)
    pairs = pair_pruned_dense([r for r in runs if r.get("batch") == batch])
    best = min((q for q in pairs if q.pruned is not None), default=None,
               key=lambda q: (q.pruned or {})["end_to_end"]["p50_ms"])
    pruned = best.pruned if best is not None else None
    dense = best.dense if best is not None else next((q.dense for q in pairs if q.dense is not None), None)
    return {"available": True, "batch": batch, "backend": runs[0].get("backend"),
            "pruned_p50_ms": pruned["end_to_end"]["p50_ms"] if pruned else None,
            "pruned_mode": pruned.get("mode") if pruned else None,
            "dense_p50_ms": dense["end_to_end"]["p50_ms"] if dense else None}


def _engine_counts(results_dir: Path) -> dict[str, Any]:
    """Built and reused engine counts and the cache keys, from the fetched engine manifest."""
    path = results_dir / "out" / "engines" / "manifest.json"
    if not path.is_file():
        return {}
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    cache = m.get("cache") or {}
    keys: list[str] = []

    def walk(o: Any) -> None:
        if isinstance(o, dict):
            c = o.get("cache")
            if isinstance(c, dict) and isinstance(c.get("key"), str) and re.fullmatch(r"[0-9a-f]{64}", c["key"]):
                keys.append(c["key"])
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)

    walk(m)
    return {"built": cache.get("built"), "reused": cache.get("reused"), "keys": sorted(set(keys))}


def _row(spec: HostSpec, tgt: Target | None, status: str, error: str | None, record: dict[str, Any] | None,
         facts: dict[str, Any] | None, seconds: float) -> FleetRow:
    """A row from a deploy record (DeployResult.to_dict() or a deploy.json) and/or the device's facts."""
    record = record or {}
    f = record.get("facts") or facts or {}
    backend = tgt.backend if tgt is not None else None
    version = (f.get("tensorrt_rtx") if backend == "tensorrt-rtx" else f.get("tensorrt") or f.get("libnvinfer"))
    row = FleetRow(spec.label, spec.target, status, error=error, jetpack=f.get("jetpack"), l4t=f.get("l4t"),
                   backend=backend_label(backend) if backend else None, backend_version=version,
                   release=record.get("release"), seconds=round(seconds, 2))
    steps = {s.get("name"): s for s in record.get("steps") or [] if isinstance(s, dict)}
    if record.get("validation"):
        row.validation = dict(record["validation"])
    elif "validate" in steps:
        row.validation = {"status": steps["validate"].get("status"), "reason": steps["validate"].get("reason")}
    pw = record.get("power") or {}
    if pw:
        row.power = {"available": bool(pw.get("available")), "mean_w": (pw.get("power_w") or {}).get("mean"),
                     "max_w": (pw.get("power_w") or {}).get("max"), "reason": pw.get("reason")}
    if record.get("results_dir"):
        rd = Path(record["results_dir"])
        row.results_dir = str(rd)
        row.latency = latency_p50(rd / "out" / "latency.json")
    if row.latency is None and "latency" in steps:
        step = steps["latency"]
        row.latency = {"available": False, "reason": step.get("reason") or f"latency step {step.get('status')}"}
        counts = _engine_counts(rd)
        row.engines = {k: v for k, v in counts.items() if k != "keys"}
    return row


def _failed_record(out: Path) -> dict[str, Any] | None:
    """The deploy.json a failed deploy left in its (private) results folder, if it got that far."""
    if not out.is_dir():
        return None
    for d in sorted(out.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True):
        if d.is_dir() and not d.name.startswith(".") and (d / "deploy.json").is_file():
            try:
                return dict(json.loads((d / "deploy.json").read_text()))
            except (OSError, ValueError):
                return None
    return None


# ---------------------------------------------------------------------------------------------- output
class _Tagged(io.TextIOBase):
    """Stands in for sys.stderr during a fleet run: what a device's thread writes comes out whole lines at a time,
    each prefixed with its device, under one lock; writes from other threads pass through unchanged."""

    def __init__(self, stream: TextIO, lock: threading.Lock) -> None:
        self.stream, self.lock, self.local = stream, lock, threading.local()

    def write(self, s: str) -> int:
        prefix = getattr(self.local, "prefix", None)
        if prefix is None:
            with self.lock:
                self.stream.write(s)
            return len(s)
        *lines, self.local.buf = (self.local.buf + s).split("\n")
        if lines:
            with self.lock:
                self.stream.write("".join(f"{prefix}{line}\n" for line in lines))
                self.stream.flush()
        return len(s)

    def flush(self) -> None:
        with self.lock:
            self.stream.flush()

    @contextlib.contextmanager
    def tagged(self, prefix: str) -> Iterator[None]:
        self.local.prefix, self.local.buf = prefix, ""
        try:
            yield
        finally:
            rest, self.local.prefix, self.local.buf = self.local.buf, None, ""
            if rest:
                with self.lock:
                    self.stream.write(f"{prefix}{rest}\n")


@contextlib.contextmanager
def _tagged_stderr(lock: threading.Lock) -> Iterator[_Tagged]:
    real = sys.stderr
    proxy = _Tagged(real, lock)
    sys.stderr = proxy  # type: ignore[assignment]
    try:
        yield proxy
    finally:
        sys.stderr = real


# ---------------------------------------------------------------------------------------------- engine sharing
def plan_fits(plan: Path, backend: str, version: str | None, compute_capability: int | None) -> str | None:
    """None when the plan's header says it loads into `backend` `version` on a GPU of `compute_capability`
    (None: not known, not checked); else the one-line reason (plan_header.check_compatible's, or the SMs)."""
    from ..backend.tensorrt.plan_header import check_compatible, read_plan_header

    if not version:
        return f"unknown: the device's {backend_label(backend)} version is not known"
    header = read_plan_header(plan)
    if (problem := check_compatible(header, backend, version)) is not None:
        return problem
    sms = [c for c in header.fields.get("compute_capabilities") or [] if isinstance(c, int)]
    if compute_capability is not None and sms and compute_capability not in sms:
        return (f"rebuild: {plan.name} is for {', '.join(f'sm_{c}' for c in sms)}, this device's GPU is "
                f"sm_{compute_capability}")
    return None


@dataclass
class _Shared:
    """What a group's first device built, fetched into a local folder, ready to seed the others' caches."""

    leader: str
    stage: Path
    keys: list[str]  # engine cache entries present and verified: stage/build/<key>.plan and .json
    plugin_key: str | None  # stage/plugins/<key>/ holds the plugin library
    notes: list[str] = field(default_factory=list)


@dataclass
class _Host:
    index: int
    spec: HostSpec
    opts: DeployOptions
    target: Target
    bundle: bundle_mod.Bundle
    facts: preflight.DeviceFacts | None = None
    group: str | None = None
    followers: list[int] = field(default_factory=list)
    leader: int | None = None

    def plugin_key(self) -> str | None:
        if self.facts is None:
            return None
        archs = plugin_archs(self.target, self.facts, self.opts.cuda_archs)
        return plugin_key(self.bundle, archs, self.facts)


def _layout(opts: DeployOptions, release: str) -> remote.Layout:
    try:
        return remote.Layout.make(opts.remote_dir, release)
    except ValueError:
        raise ConfigError(f"--remote-dir {opts.remote_dir!r}: use a plain path (letters, digits, ._/~+-), e.g. "
                          "~/dvit-deploy or /data/dvit-deploy") from None


def _probe(h: _Host) -> preflight.DeviceFacts:
    """The device's facts: the deploy's own preflight script (reads only), over one ssh connection."""
    cmds = Renderer(h.opts, h.target, _layout(h.opts, "fleet-probe"), h.bundle)
    r = Ssh(h.opts.remote(), multiplex=False).run(cmds.preflight(), timeout=120, what="preflight")
    return preflight.parse_facts(r.stdout)


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "no error output"


def _pull(h: _Host, result: DeployResult, stage: Path) -> _Shared:
    """Fetch the engine cache entries the leader's release used and its plugin library into `stage`; keep only
    entries whose plan matches its record (sha256, key) and whose header names the target's backend."""
    from ..backend.tensorrt.plan_header import read_plan_header

    assert result.results_dir is not None
    counts = _engine_counts(result.results_dir)
    keys: list[str] = counts.get("keys") or []
    plugin = result.step("plugin")
    pkey = h.plugin_key() if plugin is not None and plugin.status == "ok" else None
    layout = _layout(h.opts, result.release)
    shared = _Shared(h.spec.label, stage, [], None)
    (stage / "build").mkdir(parents=True, exist_ok=True)
    (stage / "plugins").mkdir(exist_ok=True)  # rsync makes the last folder of a destination, not its parents
    with Ssh(h.opts.remote()) as ssh:
        if keys:
            listing = stage / "files.txt"
            listing.write_text("".join(f"{k}.plan\n{k}.json\n" for k in keys))
            r = ssh.rsync([ssh.remote_path(f"{layout.rsync_root}/cache/build/")], f"{stage}/build/", "-a",
                          f"--files-from={listing}", timeout=3600, what="fetching the engines")
            if not r.ok:
                shared.notes.append(f"fetching the engines from {h.spec.label} failed (rsync exit {r.returncode}: "
                                    f"{_last_line(r.stderr)})")
                keys = []
        if pkey is not None:
            r = ssh.rsync([ssh.remote_path(f"{layout.rsync_root}/cache/plugins/{pkey}/")],
                          f"{stage}/plugins/{pkey}/", "-a", timeout=600, what="fetching the plugin library")
            if r.ok and (stage / "plugins" / pkey / PLUGIN_LIB).is_file():
                shared.plugin_key = pkey
            else:
                shared.notes.append(f"fetching the plugin library from {h.spec.label} failed (rsync exit "
                                    f"{r.returncode}: {_last_line(r.stderr)})")
    for k in keys:
        plan, rec = stage / "build" / f"{k}.plan", stage / "build" / f"{k}.json"
        try:
            record = json.loads(rec.read_text())
            ok = (record.get("key") == k and plan.is_file() and sha256_file(plan) == record.get("plan_sha256")
                  and read_plan_header(plan).backend == h.target.backend)
        except (OSError, ValueError, DvitError):
            ok = False
        if ok:
            shared.keys.append(k)
        else:
            shared.notes.append(f"engine {k[:12]} from {h.spec.label} is missing or does not match its record: "
                                "not shared")
            plan.unlink(missing_ok=True)
            rec.unlink(missing_ok=True)
    return shared


def _seed(h: _Host, shared: _Shared, say: Callable[[str], None]) -> dict[str, Any]:
    """Put what `shared` holds and fits this device into its ROOT/cache; returns what was offered and why not."""
    version = h.facts.backend_version(h.target.backend) if h.facts else None
    cc = h.facts.compute_capability if h.facts else None
    keys, refused = [], []
    for k in shared.keys:
        problem = plan_fits(shared.stage / "build" / f"{k}.plan", h.target.backend, version, cc)
        if problem is None:
            keys.append(k)
        else:
            refused.append(f"{k[:12]}: {problem}")
    mine = h.plugin_key()
    plugin = shared.plugin_key if shared.plugin_key is not None and mine == shared.plugin_key else None
    info: dict[str, Any] = {"shared_from": shared.leader, "offered": len(keys), "refused": refused,
                            "plugin": plugin is not None}
    if not keys and plugin is None:
        return info
    layout = _layout(h.opts, "fleet-seed")
    cache = layout.cache
    with Ssh(h.opts.remote()) as ssh:
        if plugin is not None:  # first: a device whose engine cache cannot take entries still gets its plugin
            lib, tmp = f"{cache}/plugins/{plugin}", f"{cache}/plugins/.{plugin}.fleet-tmp"
            r = ssh.run(f"mkdir -p {cache}/plugins && if [ -f {lib}/{PLUGIN_LIB} ]; then echo present; else "
                        f"rm -rf {tmp} && mkdir {tmp}; fi", timeout=60, what="seeding the plugin")
            if r.ok and "present" not in r.stdout:
                r = ssh.rsync([f"{shared.stage}/plugins/{plugin}/"],
                              ssh.remote_path(f"{layout.rsync_root}/cache/plugins/.{plugin}.fleet-tmp/"), "-a",
                              timeout=600, what="seeding the plugin")
                if r.ok:
                    r = ssh.run(f"mv -T {tmp} {lib} || {{ rm -rf {tmp}; exit 1; }}", timeout=60,
                                what="seeding the plugin")
            if not r.ok:
                info["plugin"] = False
                info["plugin_error"] = _last_line(r.stderr)
        if keys:
            r = ssh.run(f"mkdir -p {cache}/build", timeout=60, what="seeding the engine cache")
            if not r.ok:
                raise DvitError(f"cannot create {cache}/build on {h.spec.label} ({_last_line(r.stderr)})")
        for suffix in ("plan", "json"):  # plans first: a record is never there before its plan
            if not keys:
                break
            listing = shared.stage / f"seed-{h.index}.{suffix}.txt"
            listing.write_text("".join(f"{k}.{suffix}\n" for k in keys))
            r = ssh.rsync([f"{shared.stage}/build/"], ssh.remote_path(f"{layout.rsync_root}/cache/build/"), "-a",
                          "--ignore-existing", f"--files-from={listing}", timeout=3600, what="seeding the engines")
            if not r.ok:
                raise DvitError(f"seeding the engine cache of {h.spec.label} failed (rsync exit {r.returncode}: "
                                f"{_last_line(r.stderr)})")
    say(f"  shared    {len(keys)} engine(s){' and the plugin library' if info['plugin'] else ''} from "
        f"{shared.leader} put in the engine cache{f'; {len(refused)} refused' if refused else ''}")
    return info


# ---------------------------------------------------------------------------------------------- the fleet
def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_") or "device"


def _fleet_dir(out: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    ensure_writable_dir(out)
    for n in range(1, 1000):
        d = out / (f"fleet-{stamp}" if n == 1 else f"fleet-{stamp}-{n}")
        try:
            d.mkdir()
            return d
        except FileExistsError:
            continue
    raise DvitError(f"cannot make a fleet folder in {out}: too many fleet-{stamp}-N folders")


def deploy_fleet(hosts: Sequence[HostSpec], base: DeployOptions, *, parallel: int = DEFAULT_PARALLEL,
                 share_engines: bool = True, echo: Callable[[str], None] | None = None) -> FleetResult:
    """Deploy `base` (its host, port and target replaced per device) to every device of `hosts`, at most
    `parallel` at once; see the module docstring. `echo` receives the progress lines, each prefixed with its
    device (default print). Raises DvitError (one line) only for input that no device could deploy (bad
    options, graph set or target); a device's own failure is a failed row."""
    t0 = time.monotonic()
    if parallel < 1:
        raise ConfigError(f"--parallel {parallel}: deploy to at least 1 device at a time")
    if not hosts:
        raise ConfigError("no device: pass --host USER@HOST (repeat it for several) or --hosts FILE")
    base.check()
    lock = threading.Lock()
    emit = echo or print

    def out(line: str) -> None:
        with lock:
            emit(line)

    targets = {t: load_target(t) for t in dict.fromkeys(s.target for s in hosts)}
    bundles = {t: bundle_mod.plan(base.graphs, tgt, base.reference, repo=base.source) for t, tgt in targets.items()}
    if base.dry_run:
        return _dry_run(hosts, base, targets, out, t0, parallel)
    fleet_dir = _fleet_dir(base.out)
    todo = [_Host(i, s, dataclasses.replace(
        base, host=s.host, port=s.port if s.port is not None else base.port, target=s.target,
        out=fleet_dir / _safe(f"{s.label}-{s.target}")), targets[s.target], bundles[s.target])
        for i, s in enumerate(hosts)]
    rows: dict[int, FleetRow] = {}
    share = share_engines and base.building
    progress = base.progress
    if progress:
        out(f"dvit deploy: {len(todo)} devices, {min(parallel, len(todo))} at once; results in {fleet_dir}")
    stage_root = Path(tempfile.mkdtemp(prefix="dvit-fleet-"))
    pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="dvit-deploy")
    try:
        with _tagged_stderr(lock) as stderr:
            groups = _group(todo, pool, rows, out) if share else []
            for g in groups:
                if progress and len(g["hosts"]) > 1:
                    out(f"  group {g['key']}: {g['leader']} builds first, then {len(g['hosts']) - 1} reuse its "
                        "engines")

            def run_one(h: _Host, shared: _Shared | None, note: str | None) -> tuple[FleetRow, _Shared | None]:
                return _run_one(h, shared, note, stderr, out, stage_root, progress, t0)

            futures: dict[Future[tuple[FleetRow, _Shared | None]], _Host] = {}
            waiting = {h.index for h in todo if h.leader is not None}
            for h in sorted((h for h in todo if h.index not in rows and h.index not in waiting),
                            key=lambda h: (not h.followers, h.index)):
                futures[pool.submit(run_one, h, None, None)] = h
            while futures:
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for fut in done:
                    h = futures.pop(fut)
                    row, shared = fut.result()
                    rows[h.index] = row
                    for j in h.followers:
                        note = None
                        if row.status != "ok":
                            note = f"engines not shared: {h.spec.label}, the first of its group, failed; built here"
                        elif shared is None:
                            note = f"engines not shared: fetching them from {h.spec.label} failed; built here"
                        futures[pool.submit(run_one, todo[j], shared if row.status == "ok" else None, note)] = todo[j]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(stage_root, ignore_errors=True)
    result = FleetResult([rows[h.index] for h in todo], fleet_dir, round(time.monotonic() - t0, 2), parallel,
                         share, groups)
    atomic_write_json(fleet_dir / "fleet.json", {"graphs": str(base.graphs), "target_default": base.target,
                                                 "finished": datetime.datetime.now(datetime.timezone.utc)
                                                 .isoformat(timespec="seconds"), **result.to_dict()})
    atomic_write_text(fleet_dir / "fleet.md", f"# dvit deploy: {len(todo)} devices\n\n" + render_markdown(result.rows))
    return result


def _group(todo: list[_Host], pool: ThreadPoolExecutor, rows: dict[int, FleetRow],
           out: Callable[[str], None]) -> list[dict[str, Any]]:
    """Read every device's facts (in parallel) and group the devices that can share engines: same target,
    backend version and compute capability. A device that cannot be read becomes a failed row here."""
    t0 = time.monotonic()
    probes = {h.index: pool.submit(_probe, h) for h in todo}
    by_key: dict[tuple[Any, ...], list[_Host]] = {}
    for h in todo:
        try:
            h.facts = probes[h.index].result()
        except DvitError as e:
            rows[h.index] = _row(h.spec, h.target, "failed", str(e), None, None, time.monotonic() - t0)
            out(f"[{h.spec.label}] FAILED: {e}")
            continue
        except Exception:  # noqa: BLE001, S112 - not the device's answer: its deploy runs ungrouped and says why
            continue
        version = h.facts.backend_version(h.target.backend)
        if version is None:
            continue  # its deploy says why (preflight)
        key = (h.target.name, h.target.backend, version, h.facts.compute_capability)
        by_key.setdefault(key, []).append(h)
    groups = []
    for (tname, backend, version, cc), members in by_key.items():
        label = f"{tname} {backend_label(backend)} {version}" + (f" sm_{cc}" if cc else "")
        first = members[0]
        for m in members:
            m.group = label
        for m in members[1:]:
            m.leader = first.index
            first.followers.append(m.index)
        groups.append({"key": label, "leader": first.spec.label, "hosts": [m.spec.label for m in members]})
    return groups


def _run_one(h: _Host, shared: _Shared | None, note: str | None, stderr: _Tagged, out: Callable[[str], None],
             stage_root: Path, progress: bool, fleet_t0: float) -> tuple[FleetRow, _Shared | None]:
    """One device: seed its cache from `shared`, deploy, make its row; a leader then fetches what it built."""
    t0 = time.monotonic()
    prefix = f"[{h.spec.label}] "

    def say(text: str) -> None:
        for line in text.rstrip("\n").split("\n"):
            out(prefix + line)

    progress_say: Callable[[str], None] = say if progress else (lambda _s: None)
    notes = [note] if note else []
    seeded: dict[str, Any] = {}
    pulled: _Shared | None = None
    with stderr.tagged(prefix):
        try:
            if shared is not None:
                try:
                    seeded = _seed(h, shared, progress_say)
                except DvitError as e:
                    notes.append(f"engines not shared: {e}")
            result = deploy(h.opts, echo=say)
            row = _row(h.spec, h.target, "ok", None, result.to_dict(), h.facts.to_dict() if h.facts else None,
                       time.monotonic() - t0)
            if h.followers:
                try:
                    pulled = _pull(h, result, stage_root / str(h.index))
                    notes += pulled.notes
                except DvitError as e:
                    notes.append(f"engines not shared with the rest of the group: {e}")
        except DvitError as e:
            row = _row(h.spec, h.target, "failed", str(e), _failed_record(h.opts.out),
                       h.facts.to_dict() if h.facts else None, time.monotonic() - t0)
        except Exception as e:  # noqa: BLE001 - a bug in one device's deploy must not stop the others
            print(traceback.format_exc().rstrip(), file=sys.stderr)
            row = _row(h.spec, h.target, "failed", f"internal error: {type(e).__name__}: {e}",
                       _failed_record(h.opts.out), h.facts.to_dict() if h.facts else None, time.monotonic() - t0)
    row.group, row.notes, row.start_s = h.group, notes, round(t0 - fleet_t0, 2)
    if seeded:
        row.engines["shared_from"] = seeded["shared_from"]
        row.engines["seeded"] = {k: v for k, v in seeded.items() if k != "shared_from"}
    if row.status == "ok":
        say(f"ok in {row.seconds:.1f} s")
    else:
        say(f"FAILED: {row.error}")
    return row, pulled


def _dry_run(hosts: Sequence[HostSpec], base: DeployOptions, targets: dict[str, Target], out: Callable[[str], None],
             t0: float, parallel: int) -> FleetResult:
    """Every device's dry run, one after the other (nothing is run or written)."""
    rows = []
    for s in hosts:
        opts = dataclasses.replace(base, host=s.host, port=s.port if s.port is not None else base.port,
                                   target=s.target)
        out(f"## {s.label} ({s.target})")
        r = deploy(opts, echo=out)
        rows.append(FleetRow(s.label, s.target, r.status, backend=backend_label(targets[s.target].backend),
                             release=r.release, seconds=r.seconds))
    return FleetResult(rows, None, round(time.monotonic() - t0, 2), parallel, False)


# ---------------------------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The fleet's options, as `dvit deploy` is to take them: --host repeatable and optional, --target optional
    (a hosts file line may name its own), --hosts FILE, --parallel N, --no-share-engines."""
    p.add_argument("--host", action="append", default=None, metavar="USER@HOST",
                   help="the device, as ssh takes it (user@host[:port]); repeat it to deploy to several")
    cli_args.add_target(p, required=False, help="device profile in targets/ (dvit targets); for a fleet, of every "
                        "device whose line names none")
    p.add_argument("--hosts", default=None, metavar="FILE",
                   help=f"a fleet: one device a line, `{LINE_FORM}` (# comments; no target: --target)")
    p.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL, metavar="N",
                   help=f"fleet: devices deployed at once (default {DEFAULT_PARALLEL})")
    p.add_argument("--no-share-engines", action="store_true",
                   help="fleet: every device builds its own engines (default: the first device of each target and "
                   "backend version builds, the others reuse what their plan headers say fits)")


def main(args: argparse.Namespace) -> int:
    """`dvit deploy` with several devices: the parsed command line (add_arguments' options) to `deploy_and_report`."""
    hosts = args.host if isinstance(args.host, list) else [args.host] if args.host else []
    specs = host_specs(hosts, getattr(args, "hosts", None), args.target)
    ns = argparse.Namespace(**vars(args))
    ns.host, ns.target = specs[0].host, args.target or specs[0].target  # replaced per device
    return deploy_and_report(specs, DeployOptions.from_args(ns), parallel=getattr(args, "parallel", DEFAULT_PARALLEL),
                             share_engines=not getattr(args, "no_share_engines", False))


def deploy_and_report(hosts: Sequence[HostSpec], base: DeployOptions, *, parallel: int = DEFAULT_PARALLEL,
                      share_engines: bool = True) -> int:
    """deploy_fleet, then the table and the failed devices' errors (stdout) and the final line (stderr when a
    device failed, naming each); returns the exit status, the number of failed devices (at most 125)."""
    result = deploy_fleet(hosts, base, parallel=parallel, share_engines=share_engines)
    if result.out is not None:
        print("\n" + result.table())
        for r in result.rows:
            if r.error:
                print(f"  {r.host}: {r.error}")
        print(f"results: {result.out} (fleet.json, fleet.md)")
    print(result.final_line(), file=sys.stderr if result.failed else sys.stdout)
    return result.exit_status
