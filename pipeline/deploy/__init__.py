"""`dvit deploy`: ship a graph set to a device over ssh, build, validate and time it there, bring the results back.

    dvit deploy --graphs DIR --target orin-nano --host user@host [--port N] [--identity KEY]
                [--reference REF.npz] [--remote-dir ~/dvit-deploy] [--remote-python PATH] [--out DIR]
                [--dry-run] [--no-build] [--only-validate] [--no-progress]

1. Preflight (reads only): L4T/JetPack, TensorRT, CUDA, the GPU's compute capability, memory and swap, free disk
   in the remote dir, power mode and clock lock, which Jetson tools exist; checked against the target profile,
   and a device that does not fit stops the deploy with one line naming the fix (preflight.py).
2. Ship: the bundle (bundle.py: graph set, reference, plugin sources, target profile, the `pipeline/` package,
   every file hashed) is rsync'ed (--checksum) into a fresh ROOT/releases/<timestamp>, hard-linking what is
   unchanged since ROOT/current (--link-dest): a second deploy sends only what changed.
3. Build, validate, time and report on the device: the step table in remote.py (plugin with the device's CUDA,
   `dvit build` with caches kept in ROOT/cache, `dvit validate` against the recorded reference, `dvit latency`
   with tegrastats sampling, `dvit report`). A step whose `dvit` command the device lacks is skipped and recorded.
4. Only when every step succeeded is ROOT/current switched to the new release (ln -sfn + mv -T): a failure leaves
   the previous release current. Either way the logs, JSON and reports come back into
   OUT/<host>-<target>-<YYYYmmdd-HHMMSS>/ (deploy.json, summary.md, out/), and a failed step exits non-zero with
   the last lines of its stderr on the device.

One ssh connection (ControlMaster) carries every command and rsync; ssh runs in BatchMode with ConnectTimeout and
the host-key policy of --host-key-check. Imports neither torch, timm nor ModelOpt.

The options are one frozen DeployOptions (options.py), built once from the command line and passed down; every
remote command is rendered by one render.Renderer, whose output the run executes and --dry-run prints.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import cli_args
from ..errors import ConfigError, DvitError
from ..io import atomic_dir, atomic_write_json
from ..targets import Target, load_target
from . import bundle as bundle_mod
from . import preflight, remote, tegrastats
from .options import DEFAULT_OUT, DEFAULT_REMOTE_DIR, DeployOptions
from .render import HEADER_DIRS, Renderer, plugin_archs
from .ssh import HOST_KEY_CHECKS, SSH_ERROR, Remote, Ssh, SshError, is_ssh_failure

__all__ = ["DEFAULT_OUT", "DEFAULT_REMOTE_DIR", "HEADER_DIRS", "DeployError", "DeployOptions", "DeployResult",
           "StepRecord", "configure", "deploy", "main", "plugin_archs", "power_summary", "summary_markdown"]

FORMAT = "dvit-edge/deploy/v1"
ENGINE_ESTIMATE_SLACK = 64 << 20  # bytes added to the bundle size for engines, caches and logs


class DeployError(DvitError):
    """A step failed on the device (its stderr has been shown)."""


@dataclass
class StepRecord:
    name: str
    status: str  # ok, skipped, failed
    reason: str | None = None
    returncode: int | None = None
    seconds: float = 0.0
    command: str | None = None
    stderr_tail: str | None = None


@dataclass
class DeployResult:
    status: str  # ok, failed, dry-run
    host: str
    target: str
    release: str
    results_dir: Path | None = None
    steps: list[StepRecord] = field(default_factory=list)
    transfer: dict[str, Any] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)
    engines: dict[str, Any] = field(default_factory=dict)
    power: dict[str, Any] | None = None
    validation: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    commands: list[str] = field(default_factory=list)  # --dry-run: what would run

    def step(self, name: str) -> StepRecord | None:
        return next((s for s in self.steps if s.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["results_dir"] = str(self.results_dir) if self.results_dir else None
        return d


def _safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_") or "device"


def _last_lines(text: str, n: int = 30) -> str:
    return "\n".join(text.rstrip().splitlines()[-n:])


def _find_key(obj: Any, pattern: str) -> Any:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if re.search(pattern, str(k)):
                return v
        for v in obj.values():
            if (found := _find_key(v, pattern)) is not None:
                return found
    elif isinstance(obj, list):
        for v in obj:
            if (found := _find_key(v, pattern)) is not None:
                return found
    return None


def power_summary(out_dir: Path, interval_ms: int) -> dict[str, Any]:
    """Power, temperature and clock figures from the fetched tegrastats log, with energy per image for the pruned
    runs of latency.json (mean power over the whole latency step x p50 per image: the runs are not separated)."""
    log = out_dir / "tegrastats.log"
    absent = out_dir / "tegrastats.log.absent"
    if not log.is_file():
        why = absent.read_text().strip() if absent.is_file() else "no latency run sampled tegrastats"
        return {"available": False, "reason": why}
    summary = tegrastats.summarize(tegrastats.parse_file(log), interval_ms / 1000.0)
    summary["available"] = True
    lat_path = out_dir / "latency.json"
    power = (summary.get("power_w") or {}).get("mean")
    if lat_path.is_file() and power is not None:
        try:
            lat = json.loads(lat_path.read_text())
        except ValueError:
            lat = {}
        per = []
        for run in lat.get("runs") or []:
            p50 = (run.get("end_to_end") or {}).get("p50_ms")
            mj = tegrastats.energy_per_image_mj(power, p50, run.get("batch"))
            if mj is not None:
                per.append({"backend": run.get("backend"), "model": run.get("model"), "batch": run.get("batch"),
                            "precision": run.get("precision"), "p50_ms": p50, "energy_mj_per_image": round(mj, 3)})
        summary["energy_per_image"] = per
        summary["energy_note"] = ("mean power over the whole latency step times p50 latency per image; pruned and "
                                  "dense runs are not separated in the power samples")
    return summary


# ---------------------------------------------------------------------------------------------- the API
@dataclass
class _Run:
    """What one deploy has done on the device so far, for cleaning up after an interrupt."""

    layout: remote.Layout
    cmds: Renderer
    release_made: bool = False
    step: str | None = None  # the step (or phase: ship) running now


def deploy(opts: DeployOptions, *, echo: Callable[[str], None] | None = None) -> DeployResult:
    """Deploy `opts.graphs` to `opts.host` for `opts.target`; see the module docstring. `echo` receives the progress
    lines (default print) and, even without progress, the result line. Raises DvitError (one line) for bad input or
    a device that does not fit, DeployError when a step fails on the device (after bringing its logs back) or the
    connection is lost. An interrupt (KeyboardInterrupt) stops the remote step and removes the partial release
    before it propagates; where that cannot be done, a DeployError says what was left."""
    t0 = time.monotonic()
    result_line = echo or print
    say = result_line if opts.progress else (lambda _s: None)
    tgt = load_target(opts.target)
    opts.check()
    rem = opts.remote()
    release = time.strftime("%Y%m%d-%H%M%S")
    try:
        layout = remote.Layout.make(opts.remote_dir, release)
    except ValueError:
        raise ConfigError(f"--remote-dir {opts.remote_dir!r}: use a plain path (letters, digits, ._/~+-), e.g. "
                          "~/dvit-deploy or /data/dvit-deploy") from None
    b = bundle_mod.plan(opts.graphs, tgt, opts.reference, repo=opts.source)
    need_bytes = (int(opts.need_disk_mb * 2**20) if opts.need_disk_mb is not None
                  else b.bytes + sum(f.bytes for f in b.files if f.dest.startswith("graphs/")) + ENGINE_ESTIMATE_SLACK)
    cmds = Renderer(opts, tgt, layout, b)
    result = DeployResult(status="running", host=rem.label, target=tgt.name, release=release)
    conditions = remote.Conditions(managed_venv=opts.remote_python is None, building=opts.building,
                                   only_validate=opts.only_validate, reference=opts.reference is not None,
                                   plugin_buildable=True)

    if opts.dry_run:
        return _dry_run(result, rem, cmds, conditions, say if opts.progress else print, t0)

    stage_dir = Path(tempfile.mkdtemp(prefix="dvit-bundle-"))
    failed: str | None = None
    facts = preflight.DeviceFacts()
    run = _Run(layout, cmds)
    try:
        with Ssh(rem) as ssh:
            # ---- 1. preflight (reads only; a device that does not fit leaves no trace anywhere)
            say(f"dvit deploy: {tgt.name} to {rem.label}, release {release}")
            t = time.monotonic()
            r = ssh.run(cmds.preflight(), timeout=120, what="preflight")
            facts_text = r.stdout
            facts = preflight.parse_facts(facts_text)
            fit = preflight.check_fit(facts, tgt, host=rem.host, need_bytes=need_bytes,
                                      remote_dir=opts.remote_dir, needs_plugin=b.uses_plugin,
                                      building=opts.building, remote_python=opts.remote_python,
                                      validating=opts.reference is not None, timing=not opts.only_validate)
            result.facts, result.fit = facts.to_dict(), fit.to_dict()
            result.steps.append(StepRecord("preflight", "ok" if fit.ok else "failed",
                                           seconds=time.monotonic() - t))
            if not fit.ok:
                for problem in fit.errors[1:]:
                    print(f"dvit deploy: also: {problem}", file=sys.stderr)
                raise DvitError(fit.errors[0])
            _describe_device(say, facts, tgt)
            for w in fit.warnings:
                print(f"dvit deploy: warning: {w}", file=sys.stderr)
                result.warnings.append(w)
            for n in fit.notes:
                say(f"  note: {n}")
            if not opts.building and facts.current_release is None:
                raise DvitError(f"{opts.reuse_flag} reuses the engines of the current release, but {rem.host} "
                                f"has none in {opts.remote_dir}: deploy once without it")
            if not opts.building and (refused := preflight.check_reuse(
                    facts, {"sha256": b.graphs.sha256, "kind": b.graphs.kind, "precision": b.graphs.precision,
                            "batch_sizes": b.graphs.batch_sizes}, host=rem.host, flag=opts.reuse_flag)):
                raise DvitError(refused)
            conditions.current_has_engines = facts.current_has_engines
            conditions.has_gpu = facts.has_gpu
            conditions.plugin_buildable = bool(facts.nvcc and facts.tools.get("cmake") and facts.trt_headers
                                               and any(f.dest.startswith("plugins/") for f in b.files))
            if not conditions.plugin_buildable:
                missing = [n for n, v in (("nvcc", facts.nvcc), ("cmake", facts.tools.get("cmake")),
                                          ("TensorRT headers", facts.trt_headers)) if not v]
                conditions.plugin_why_not = (f"the device has no {', '.join(missing) or 'plugin sources'}; the "
                                             "graphs use no plugin")
            # ---- 2. ship into a fresh release directory
            t = time.monotonic()
            run.step = "ship"
            _fresh_release(ssh, run, facts, result, say)
            layout, cmds = run.layout, run.cmds
            b.stage(stage_dir)
            os.chmod(stage_dir, 0o755)  # rsync -a gives the release directory the staging directory's mode
            link = facts.current_release is not None
            ship = cmds.ship(ssh, str(stage_dir), link)
            r = ssh.rsync(list(ship.sources), ship.dest, *ship.options, timeout=3600, what="shipping the bundle")
            sent = [line[12:] for line in r.stdout.splitlines() if line.startswith("<f")]
            total = len(b.files) + 2
            result.transfer = {"files": total, "sent": len(sent), "unchanged": total - len(sent),
                               "sent_files": sent, "bytes": b.bytes, "link_dest": link,
                               "seconds": round(time.monotonic() - t, 2)}
            if not r.ok:
                result.steps.append(StepRecord("ship", "failed", returncode=r.returncode,
                                               seconds=time.monotonic() - t, stderr_tail=_last_lines(r.stderr)))
                raise DvitError(f"shipping the bundle to {rem.host} failed (rsync exit {r.returncode}: "
                                f"{_last_lines(r.stderr, 1)}); current was not changed")
            result.steps.append(StepRecord("ship", "ok", seconds=time.monotonic() - t))
            say(f"  ship      {len(sent)} of {total} files sent, {total - len(sent)} unchanged "
                f"({b.bytes / 2**20:.1f} MiB bundle{', hard links to current' if link else ''})")

            # ---- 3. the steps
            failed = _run_steps(ssh, run, conditions, facts, result, say)
            run.step = "fetching the results"
            result.engines = _engines_record(result, facts)

            # ---- 4. bring the results back (also after a failure: the logs say why)
            result.results_dir = _collect(ssh, cmds, rem, opts.out, result, facts_text=facts_text,
                                          failed=failed)
    except KeyboardInterrupt:
        if run.release_made:
            _abort(rem, run, facts)
        raise
    finally:
        shutil.rmtree(stage_dir, ignore_errors=True)
    result.seconds = round(time.monotonic() - t0, 2)
    if result.results_dir is not None:
        _write_record(result)
    if failed is not None:
        rec = result.step(failed)
        assert rec is not None
        if rec.stderr_tail:
            print(f"--- last lines of step '{failed}' stderr on {rem.host} ---\n{rec.stderr_tail}\n---",
                  file=sys.stderr)
        last = (rec.stderr_tail or "").strip().splitlines()[-1:] or ["no error output"]
        what = (f"step '{failed}' produced no numbers on {rem.host}" if rec.returncode == 0
                else f"step '{failed}' failed on {rem.host} (exit {rec.returncode})")
        raise DeployError(f"{what}: {last[0]}; current still points at {_previous(facts)}; logs in "
                          f"{result.results_dir}")
    root = _expand_home(layout.root, facts.home)
    result_line(f"dvit deploy: ok in {result.seconds:.1f} s: {root}/current -> releases/{layout.release}; results "
                f"in {result.results_dir}")
    return result


def _previous(facts: preflight.DeviceFacts) -> str:
    """What current pointed at before this deploy, for messages."""
    return (f"releases/{facts.current_release.rsplit('/', 1)[-1]}" if facts.current_release
            else "nothing (first deploy)")


def _expand_home(path: str, home: str | None) -> str:
    """A layout path ($HOME/...) as the device has it, for messages."""
    return path.replace("$HOME", home.rstrip("/"), 1) if home and path.startswith("$HOME") else path


def _fresh_release(ssh: Ssh, run: _Run, facts: preflight.DeviceFacts, result: DeployResult,
                   say: Callable[[str], None]) -> None:
    """Creates this deploy's release directory under a name no release has: another deploy in the same second
    (here, from another machine, or listed by preflight) takes the name, this one takes NAME-2, NAME-3, ..."""
    base, opts = run.layout.release, run.cmds.opts
    taken = set(facts.releases)
    for n in range(1, 51):
        name = base if n == 1 else f"{base}-{n}"
        if name in taken:
            continue
        layout = remote.Layout.make(opts.remote_dir, name)
        cmds = dataclasses.replace(run.cmds, layout=layout)
        r = ssh.run(cmds.release_dir(), timeout=60, what="mkdir")
        if r.ok:
            run.layout, run.cmds, run.release_made = layout, cmds, True
            if name != base:
                say(f"  release   {name} ({base} is taken on the device)")
            result.release = name
            return
        if "exists" not in r.stderr:
            raise DvitError(f"cannot create {layout.rel} on {ssh.remote.host} ({_last_lines(r.stderr, 1)}): check "
                            "the permissions of --remote-dir or pass another one")
        taken.add(name)
    raise DvitError(f"cannot create a release directory on {ssh.remote.host}: {base} and 49 more names are taken "
                    f"in {opts.remote_dir}/releases")


def _abort(rem: Remote, run: _Run, facts: preflight.DeviceFacts) -> None:
    """After an interrupt: stop the step running on the device (its process group) and remove the partial release,
    over a connection of its own; says what was done. Returns when all went (the interrupt then propagates);
    raises DeployError naming what was left otherwise. A second interrupt meanwhile is ignored (bounded: at most
    about two minutes)."""
    host, rel = rem.host, f"releases/{run.layout.release}"
    where = f" during {'step ' + repr(run.step) if run.step not in (None, 'ship') else run.step or 'the deploy'}"
    previous = signal.getsignal(signal.SIGINT) if _main_thread() else None
    if previous is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with Ssh(rem) as ssh:
            r = ssh.run(run.cmds.abort(), timeout=60, what="stopping the interrupted deploy")
        out, err = r.stdout.split(), _last_lines(r.stderr, 1)
    except SshError as e:
        out, err = [], str(e)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    stopped = [w for i, w in enumerate(out) if i and out[i - 1] == "stopped"]
    did = f"stopped the remote work (process group {stopped[0]}) and " if stopped else ""
    if "removed" in out:
        print(f"dvit deploy: interrupted{where}: {did}removed the partial release {rel} on {host}; current still "
              f"points at {_previous(facts)}", file=sys.stderr)
        return
    if "current" in out:
        stop = f"stopped the remote work (process group {stopped[0]}); " if stopped else ""
        print(f"dvit deploy: interrupted{where}: {stop}{rel} is already current on {host} and stays",
              file=sys.stderr)
        return
    raise DeployError(f"interrupted{where}: {did}could not remove the partial release on {host} "
                      f"({err or 'it is still there'}): remove {_expand_home(run.layout.rel, facts.home)} there by "
                      f"hand; current still points at {_previous(facts)}")


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _engines_record(result: DeployResult, facts: preflight.DeviceFacts) -> dict[str, Any]:
    """What happened to the engines: built or reused, and whether they ran (validation) or why not; what was
    validated only when validation succeeded."""
    built = getattr(result.step("build"), "status", None) == "ok"
    reused = getattr(result.step("reuse-engines"), "status", None) == "ok"
    validate = result.step("validate")
    ran = (built or reused) and facts.has_gpu
    if validate is not None and validate.status == "ok":
        onnx = "the shipped ONNX graph set was validated with ONNX Runtime against the recorded reference"
    elif validate is not None and validate.status == "failed":
        onnx = "validating the shipped ONNX graph set with ONNX Runtime failed"
    else:
        why_not = validate.reason if validate is not None and validate.reason else "the deploy stopped before"
        onnx = f"the shipped ONNX graph set was not validated ({why_not})"
    if ran:
        why = None
    elif not facts.has_gpu:
        why = f"no GPU on the device: engines could not run; {onnx}"
    else:
        why = f"no engines in this release (build skipped): {onnx}"
    validated = None
    if validate is not None and validate.status == "ok":
        validated = "engines" if ran else "onnx graphs"
    return {"built": built, "reused": reused, "ran": ran, "validated": validated, "why": why}


def _describe_device(say: Callable[[str], None], f: preflight.DeviceFacts, tgt: Target) -> None:
    parts = []
    if f.jetson:
        parts.append(f"{f.model or 'Jetson'}, L4T R{f.l4t}" + (f" (JetPack {f.jetpack})" if f.jetpack else ""))
    elif f.gpus:
        parts.append(", ".join(g["name"] for g in f.gpus))
    else:
        parts.append(f"{f.uname or 'unknown system'}, no NVIDIA GPU")
    v = f.backend_version(tgt.backend)
    if v:
        parts.append(f"{'TensorRT-RTX' if tgt.backend == 'tensorrt-rtx' else 'TensorRT'} {v}")
    if f.cuda:
        parts.append(f"CUDA {f.cuda}")
    if f.compute_capability:
        parts.append(f"sm_{f.compute_capability}")
    if f.power_mode:
        parts.append(f"power mode {f.power_mode}")
    if f.clocks.locked is not None:
        parts.append("clocks locked" if f.clocks.locked else "clocks not locked")
    if f.disk_free_kb is not None:
        parts.append(f"{f.disk_free_kb / 2**20:.1f} GiB free")
    say(f"  preflight {'; '.join(parts)}")


def _run_steps(ssh: Ssh, run: _Run, c: remote.Conditions, facts: preflight.DeviceFacts, result: DeployResult,
               say: Callable[[str], None]) -> str | None:
    """Runs the step table in order; returns the name of the failed step, or None. A step that exits 0 without
    producing what it exists for (latency without timings) counts as failed; a lost connection raises DeployError."""
    cmds = run.cmds
    ran: dict[str, str] = {}
    for i, step in enumerate(remote.STEPS, start=1):
        reason = remote.skip_reason(step, c, ran)
        if reason is not None:
            ssh.run(cmds.skipped(step, reason), timeout=60, what="step log")
            ran[step.name] = "skipped"
            result.steps.append(StepRecord(step.name, "skipped", reason=reason))
            say(f"  {step.name:<9} skipped: {reason}")
            continue
        command = cmds.step(step, facts, ran)
        t = time.monotonic()
        run.step = step.name
        r = ssh.run(cmds.wrapped(step, i, command), timeout=step.timeout, what=f"step {step.name}",
                    check_connection=False)
        if (r.returncode == SSH_ERROR and (not r.stderr.strip() or is_ssh_failure(r.stderr))
                and (lost := _connection_lost(ssh, run, step, r.stderr, facts)) is not None):
            raise lost
        rec = StepRecord(step.name, "ok" if r.ok else "failed", returncode=r.returncode,
                         seconds=round(time.monotonic() - t, 2), command=command,
                         stderr_tail=_last_lines(r.stderr) if not r.ok else None)
        if r.ok and (empty := _no_numbers(step.name, r.stdout)) is not None:
            rec.status, rec.reason, rec.stderr_tail = "failed", "no numbers", empty
        result.steps.append(rec)
        ran[step.name] = rec.status
        if step.name == "commands" and r.ok:
            c.commands = remote.parse_commands(r.stdout)
        detail = _step_detail(step.name, r.stdout) if rec.status == "ok" else (
            f"FAILED (exit {r.returncode})" if not r.ok else "FAILED (no numbers)")
        say(f"  {step.name:<9} {detail} ({rec.seconds:.1f} s)")
        if rec.status != "ok":
            return step.name
    return None


def _no_numbers(name: str, stdout: str) -> str | None:
    """Why a step that exited 0 produced none of its numbers (its own lines saying so), or None."""
    if name != "latency":
        return None
    unavailable = [line for line in stdout.splitlines() if " unavailable: " in line]
    timed = [line for line in stdout.splitlines() if " p50 " in line]
    return "\n".join(unavailable) if unavailable and not timed else None


def _connection_lost(ssh: Ssh, run: _Run, step: remote.Step, stderr: str,
                     facts: preflight.DeviceFacts) -> DeployError | None:
    """The ssh client of a step exited 255 as ssh does when the connection dies: the error to raise, with what the
    device says of the step (read over a new connection; a step still running is stopped and its release removed),
    or None when the device logged the step as failed with that status itself (an ordinary failure)."""
    host = ssh.remote.host
    lost = (f"lost the connection to {host} during step '{step.name}' (ssh exited 255"
            + (f": {_last_lines(stderr, 1)})" if stderr.strip() else " without an error message)"))
    try:
        with Ssh(ssh.remote) as again:  # a connection of its own: the old one is gone
            lines = again.run(run.cmds.step_state(step), timeout=60, what="reading the step's state").stdout
            running = [x.split("=", 1)[1] for x in lines.split() if x.startswith("running=")]
            stopped = again.run(run.cmds.abort(), timeout=60, what="stopping the step").stdout if running else ""
    except SshError as e:
        return DeployError(f"{lost}; reconnecting to check the step failed ({e}); current still points at "
                           f"{_previous(facts)}")
    last = next((x for x in reversed(lines.strip().splitlines()) if not x.startswith("running=")), "")
    state = last.split(None, 2)[2] if len(last.split(None, 2)) == 3 else ""
    if running:
        done = ("was still running there: stopped it and removed the release" if "removed" in stopped.split()
                else "was still running there: stopped it; the release stays")
    elif state == "ok":
        done = "finished ok on the device, but the deploy cannot go on without the connection: deploy again"
    elif state.startswith("failed"):
        return None
    else:
        done = "had not recorded an end on the device"
    return DeployError(f"{lost}; the step {done}; current still points at {_previous(facts)}")


def _step_detail(name: str, stdout: str) -> str:
    if name == "commands":
        return "dvit commands: " + ", ".join(remote.parse_commands(stdout))
    if name == "plugin":
        return "cached" if "cached, not rebuilt" in stdout else "built"
    if name == "prune":
        words = [line.split()[0] for line in stdout.splitlines() if line.strip()]
        detail = f"{words.count('kept')} release(s) kept"
        if words.count("removed"):
            detail += f"; removed {words.count('removed')} older"
        if words.count("removed-incomplete"):
            detail += f"; removed {words.count('removed-incomplete')} failed or aborted"
        if words.count("in-progress"):
            detail += f"; left {words.count('in-progress')} newer incomplete (a deploy in progress?)"
        return detail
    if name == "build":
        linked = next((line for line in stdout.splitlines() if "hard links into the engine cache" in line), None)
        return f"ok; {linked.split(' (')[0]}" if linked else "ok"
    return "ok"


def _collect(ssh: Ssh, cmds: Renderer, rem: Remote, out: Path, result: DeployResult, facts_text: str,
             failed: str | None) -> Path:
    """Fetch out/ (logs, JSON, reports; no engines) into OUT/<host>-<target>-<release>/, written atomically."""
    base, layout = Path(out), cmds.layout
    name = f"{_safe_name(rem.host)}-{cmds.target.name}-{layout.release}"
    dest = base / name
    n = 2
    while dest.exists():
        dest, n = base / f"{name}-{n}", n + 1
    with atomic_dir(dest, overwrite=False) as tmp:
        fetch = cmds.fetch(ssh, f"{tmp}/out")
        r = ssh.rsync(list(fetch.sources), fetch.dest, *fetch.options, timeout=1800, what="fetching the results")
        if not r.ok:
            result.warnings.append(f"fetching the results failed (rsync exit {r.returncode}: "
                                   f"{_last_lines(r.stderr, 1)}); they stay on the device in {layout.out}")
        (tmp / "bundle.json").write_text(json.dumps(cmds.bundle.manifest(), indent=2, sort_keys=True) + "\n")
        (tmp / "preflight.txt").write_text(facts_text)
        result.power = power_summary(tmp / "out", cmds.opts.tegrastats_ms)
        for w in (result.power or {}).get("warnings", []):
            if w not in result.warnings:
                result.warnings.append(w)
        vpath = tmp / "out" / "validation.json"
        if vpath.is_file():
            try:
                v = json.loads(vpath.read_text())
                req, chain = v.get("requirements") or {}, v.get("chain") or {}
                result.validation = {"passed": req.get("passed"), "profile": req.get("profile"),
                                     "graphs": v.get("graphs_dir"), "chain_accuracy": chain.get("accuracy"),
                                     "chain_agreement": chain.get("agreement"),
                                     "samples": (v.get("dataset") or {}).get("samples")}
            except ValueError:
                result.validation = None
        result.status = "failed" if failed else "ok"
        if failed:
            result.error = f"step {failed} failed"
        atomic_write_json(tmp / "deploy.json", {"format": FORMAT, **result.to_dict(), "results_dir": str(dest)})
        (tmp / "summary.md").write_text(summary_markdown(result, dest))
    return dest


def _write_record(result: DeployResult) -> None:
    """Rewrite deploy.json with the final timing (the folder already exists, complete)."""
    assert result.results_dir is not None
    atomic_write_json(result.results_dir / "deploy.json", {"format": FORMAT, **result.to_dict()})
    (result.results_dir / "summary.md").write_text(summary_markdown(result, result.results_dir))


def summary_markdown(r: DeployResult, where: Path) -> str:
    f = r.facts or {}
    lines = [f"# dvit deploy: {r.target} on {r.host}", "", f"- release: `{r.release}`, status: **{r.status}**",
             f"- results: `{where}`", f"- time: {r.seconds:.1f} s"]
    if f:
        dev = f.get("model") or (", ".join(g["name"] for g in f.get("gpus") or []) or f.get("uname"))
        lines.append(f"- device: {dev}; L4T {f.get('l4t') or '-'}; JetPack {f.get('jetpack') or '-'}; TensorRT "
                     f"{f.get('tensorrt') or f.get('libnvinfer') or '-'}; TensorRT-RTX {f.get('tensorrt_rtx') or '-'}; "
                     f"CUDA {f.get('cuda') or '-'}; power mode {f.get('power_mode') or '-'}; clocks locked: "
                     f"{(f.get('clocks') or {}).get('locked')}")
    if r.transfer:
        lines.append(f"- shipped: {r.transfer['sent']} of {r.transfer['files']} files sent, {r.transfer['unchanged']} "
                     "unchanged")
    if r.engines.get("why"):
        lines.append(f"- engines: {r.engines['why']}")
    lines += ["", "| step | status | time (s) | note |", "|---|---|---|---|"]
    for s in r.steps:
        lines.append(f"| {s.name} | {s.status} | {s.seconds:.1f} | {(s.reason or '').replace('|', '/')} |")
    if r.validation:
        v = r.validation
        lines += ["", (f"Validation ({v.get('profile')}, {v.get('samples')} images): passed = {v.get('passed')}, "
                       f"chain accuracy {v.get('chain_accuracy')}, agreement {v.get('chain_agreement')}")]
    p = r.power or {}
    lines.append("")
    if p.get("available"):
        pw = p.get("power_w") or {}
        t = p.get("temp_max_c") or {}
        lines.append(f"Power: mean {pw.get('mean')} W, max {pw.get('max')} W ({pw.get('source')}); hottest "
                     f"{t.get('sensor')} {t.get('value')} C; GPU load {p.get('gpu_load_pct')}; GPU clock "
                     f"{p.get('gpu_clock_mhz')} MHz")
        for e in p.get("energy_per_image") or []:
            lines.append(f"- {e['model']} {e['backend']} batch {e['batch']}: p50 {e['p50_ms']} ms, "
                         f"{e['energy_mj_per_image']} mJ/image")
    else:
        lines.append(f"Power: not measured ({p.get('reason', 'no latency run')})")
    if r.warnings:
        lines += ["", "Warnings:"] + [f"- {w}" for w in r.warnings]
    return "\n".join(lines) + "\n"


def _dry_run(result: DeployResult, rem: Remote, cmds: Renderer, c: remote.Conditions, say: Callable[[str], None],
             t0: float) -> DeployResult:
    """Print every remote command a deploy would run, in order, as the run renders it; run none (not even ssh)."""
    ssh = Ssh(rem)
    ctx = cmds.context()
    listed: list[str] = []

    def show(title: str, command: str) -> None:
        listed.append(command)
        say(f"# {title}\n{command}\n")

    say(f"dvit deploy --dry-run: {cmds.target.name} to {rem.label}; nothing is run. Every remote command, in order "
        f"(ssh {' '.join(shlex.quote(o) for o in rem.base_options())} {rem.destination} 'sh -c ...'):\n")
    show("1. preflight (reads only)", cmds.preflight().strip())
    show("2. a fresh release directory", cmds.release_dir())
    show(f"3. ship {len(cmds.bundle.files) + 2} files, {cmds.bundle.bytes / 2**20:.1f} MiB (--link-dest only when a "
         "current release exists)", cmds.ship(ssh, "<staged bundle>", True).text(ssh))
    for step in remote.STEPS:
        reason = remote.skip_reason(step, c, {"validate": "ok"})
        when = remote.CONDITION_TEXT.get(step.when, step.when)
        if step.needs:
            when += f"; skipped if the device's dvit has no `{step.needs}`"
        title = f"step {step.name}: {step.what.format(**ctx)} [{when}]"
        if reason is not None:
            title += f" -> SKIPPED here: {reason}"
        show(title, cmds.step(step))
    show("each step runs wrapped (logs on the device, steps.log), e.g.",
         cmds.wrapped(remote.STEPS[0], 1, cmds.step(remote.STEPS[0])))
    show("fetch the results", cmds.fetch(ssh, "<results>/out").text(ssh))
    result.status, result.commands, result.seconds = "dry-run", listed, round(time.monotonic() - t0, 2)
    return result


# ---------------------------------------------------------------------------------------------- CLI
def configure(p: argparse.ArgumentParser) -> None:
    """The options of `dvit deploy`; `DeployOptions.from_args` reads them back."""
    cli_args.add_graphs(p, help="the graph set to deploy (export, precision or plugin-pass output)")
    from . import fleet  # here: fleet imports this package

    fleet.add_arguments(p)  # --host (repeatable), --target, --hosts FILE, --parallel, --no-share-engines
    p.add_argument("--port", type=int, default=None, help="ssh port (default: 22 or your ssh config)")
    p.add_argument("--identity", default=None, metavar="KEY", help="ssh private key (default: your agent and ~/.ssh)")
    p.add_argument("--reference", default=None, metavar="REF.npz",
                   help="recorded PyTorch reference (dvit reference) to validate against on the device")
    p.add_argument("--remote-dir", default=DEFAULT_REMOTE_DIR, metavar="DIR",
                   help=f"deploy root on the device: releases/, current, cache/ (default {DEFAULT_REMOTE_DIR})")
    p.add_argument("--remote-python", default=None, metavar="PATH",
                   help="an interpreter on the device that has what dvit needs, checked by preflight (default: a venv "
                   "in the deploy root, made with --system-site-packages and `pip install .[device,...]` with what "
                   "the device needs: cuda12/cuda13 where engines run, onnxruntime where they cannot)")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"local folder for the results, one subfolder per deploy (default {DEFAULT_OUT})")
    p.add_argument("--dry-run", action="store_true", help="print every remote command; run none")
    p.add_argument("--no-build", action="store_true",
                   help="reuse the engines of the device's current release (re-validate and re-time)")
    p.add_argument("--only-validate", action="store_true",
                   help="reuse the current engines and only validate (e.g. after a dataset change)")
    cli_args.add_progress(p, help="print only warnings, errors and the result")
    p.add_argument("--host-key-check", choices=HOST_KEY_CHECKS, default="accept-new",
                   help="ssh StrictHostKeyChecking (default accept-new: remember a new host, refuse a changed key)")
    p.add_argument("--known-hosts", default=None, metavar="FILE",
                   help="ssh UserKnownHostsFile (default ~/.ssh/known_hosts)")
    p.add_argument("--connect-timeout", type=int, default=10, metavar="S", help="ssh ConnectTimeout (default 10)")
    p.add_argument("--ssh-option", action="append", default=[], metavar="KEY=VALUE", help="extra ssh -o option")
    p.add_argument("--tensorrt-root", default=None, metavar="DIR",
                   help="TensorRT headers on the device (DIR/include or DIR holds NvInferRuntime.h) for the plugin "
                   "build (default: the usual system include dirs)")
    p.add_argument("--cuda-archs", default=None, metavar="LIST",
                   help="CUDA architectures for the plugin, e.g. 87 or '80;86' (default: the device's own SM)")
    p.add_argument("--need-disk-mb", type=float, default=None, metavar="MB",
                   help="space the deploy needs on the device (default: bundle + graphs + 64 MB)")
    p.add_argument("--keep-releases", type=int, default=3, metavar="N",
                   help="complete releases kept on the device, current among them (default 3); failed and aborted "
                   "ones are removed")
    p.add_argument("--tegrastats-interval", type=int, default=200, metavar="MS",
                   help="tegrastats sampling interval during the latency runs (default 200)")
    p.add_argument("--jobs", type=int, default=None, help="parallel jobs for the plugin build (default: device cpus)")
    p.add_argument("--latency-args", default="", metavar="ARGS",
                   help="extra options for `dvit latency` on the device, e.g. '--duration-s 5 --batch-sizes 1,8'")


def main(args: argparse.Namespace) -> int:
    hosts = args.host or []
    if args.hosts or len(hosts) > 1:
        from . import fleet  # here, not at the top: fleet imports this package

        return fleet.main(args)
    if not hosts:
        raise ConfigError("no device: pass --host USER@HOST (repeat it for several) or --hosts FILE")
    if not args.target:
        raise ConfigError("--target NAME is required: the device profile in targets/ (dvit targets)")
    deploy(DeployOptions.from_args(args))
    return 0
