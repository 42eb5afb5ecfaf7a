"""The remote side of `dvit deploy`: the device's directory layout and the step table.

Layout on the device (ROOT is --remote-dir, default ~/dvit-deploy):

    ROOT/releases/<YYYYmmdd-HHMMSS>/    one deploy: the shipped bundle (see bundle.py), plus out/ with what the steps
                                        write (engines/, plugins/, validation.json, latency.json, tegrastats.log,
                                        report/, logs/NN-step.out|.err, steps.log)
    ROOT/current -> releases/<...>      the last release whose every step succeeded; switched atomically
                                        (ln -sfn + mv -T) as the last step, so a failure leaves it untouched
    ROOT/cache/build                    `dvit build --cache-dir`: engine and timing caches, kept between deploys
    ROOT/cache/plugins/<key>/           plugin libraries by (sources, CUDA archs, nvcc, headers): built once
    ROOT/venv                           the device-side venv (--system-site-packages), unless --remote-python

A release is complete once its `switch` step succeeded (its out/steps.log says `switch ok`); pruning keeps the
newest --keep-releases complete ones (current among them) and removes every incomplete release older than current
(a failed or aborted deploy). Each step runs in a process group of its own (setsid), whose id is in
out/.step-pgid while it runs, so that an interrupted deploy can stop the remote work (`abort_script`).

STEPS is the table of what runs there, in order: each entry is a POSIX-sh template whose {placeholders} come
from `context()`, filled by render.Renderer (the one place a deploy's commands are rendered, for the run and for
--dry-run alike). `needs` names a `dvit` subcommand: a step whose command the device's dvit does not list
(`dvit --help`) is skipped and recorded as skipped, never replaced. `when` names the condition under which the
step runs (see `skip_reason`). `dvit deploy --dry-run` prints every command of this table.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

from . import tegrastats

# Every step runs from the release directory, with the CUDA toolkit and sbin (nvpmodel) on PATH (a Jetson keeps
# nvcc in /usr/local/cuda/bin, which is not on a non-login PATH).
PREFIX = 'export PATH="$PATH:/usr/local/cuda/bin:/usr/sbin:/sbin"; cd {rel} || exit 1; '
# The device runs the shipped sources (PYTHONPATH), whatever an interpreter has installed.
DVIT = "DVIT_TARGETS_DIR={rel}/targets PYTHONPATH={rel} {py} -m pipeline.cli"

# `{extras}`: what this deploy runs on this device (render.Renderer.decided, from preflight.requirements): the
# device side, the cuda-python of the device's CUDA major where engines run, ONNX Runtime where they cannot.
ENV = (
    "if [ ! -x {venv}/bin/python ]; then python3 -m venv --system-site-packages {venv} || exit 1; fi; "
    "want=\"$(sha256sum pyproject.toml | cut -d' ' -f1) {extras}\"; "
    'if [ "$(cat {venv}/.dvit-device-deps 2>/dev/null)" = "$want" ]; then echo "device dependencies up to date: '
    '.[{extras}]"; '
    'else {venv}/bin/python -m pip install --quiet "{rel}[{extras}]" && echo "$want" > {venv}/.dvit-device-deps; fi'
)
# Device-side helpers of the deploy itself (ondevice.py): shipped with the bundle, run by the device's interpreter.
ONDEVICE = "PYTHONPATH={rel} {py} -m pipeline.deploy.ondevice"
PLUGIN = (
    'lib={cache}/plugins/{plugin_key}; '
    'if [ -f "$lib/libdvit_trt_plugins.so" ]; then echo "plugin {plugin_key}: cached, not rebuilt"; '
    "else cmake -S {rel}/plugins -B {rel}/build/plugins -DCMAKE_BUILD_TYPE=Release "
    "'-DCMAKE_CUDA_ARCHITECTURES={archs}' -DCMAKE_CUDA_COMPILER={nvcc} -DTENSORRT_INCLUDE_DIR={trt_include} "
    "-DDVIT_BUILD_TESTS=OFF -DDVIT_BUILD_STATIC_REGISTRATION=OFF "
    "&& cmake --build {rel}/build/plugins -j {jobs} "
    '&& mkdir -p {cache}/plugins && rm -rf "$lib.tmp" && mkdir "$lib.tmp" '
    '&& cp {rel}/build/plugins/libdvit_trt_plugins.so {rel}/build/plugins/libdvit_topk_gather_kernel.so "$lib.tmp"/ '
    '&& mv "$lib.tmp" "$lib" || exit 1; fi; '
    'mkdir -p {out}/plugins && {{ ln -f "$lib"/*.so {out}/plugins/ 2>/dev/null || cp "$lib"/*.so {out}/plugins/; }}'
)
# `dvit --help`; where it cannot run (its parser imports every stage, and a device has no torch), the command table
# of the shipped pipeline/cli.py, printed in --help's layout.
COMMANDS = (
    DVIT + " --help || {{ echo 'dvit --help failed on the device; listing pipeline/cli.py COMMANDS instead' >&2; "
    "PYTHONPATH={rel} {py} -c \"import pipeline.cli as c; print(chr(10).join('    ' + n for n, _, _ in c.COMMANDS))\"; }}"
)
REUSE = (
    "test -d {current}/out/engines || {{ echo 'the current release has no engines: deploy once without "
    "--no-build/--only-validate' >&2; exit 1; }}; cp -al {current}/out/engines {out}/engines && "
    "{{ test ! -d {current}/out/plugins || cp -al {current}/out/plugins {out}/plugins; }} && "
    + ONDEVICE + " check-reuse {out}/engines {rel}/graphs"
)
BUILD = (DVIT + " build --graphs {rel}/graphs --target {target} --out {out}/engines --cache-dir {cache}/build"
         "{plugin_lib_arg} && " + ONDEVICE + " link-cache {out}/engines {cache}/build")
LATENCY = tegrastats.shell_wrap(
    DVIT + " latency --graphs {latency_graphs} --backend {latency_backend}{latency_plugin_arg} --no-progress "
    "--json {out}/latency.json{latency_extra}", "{out}/tegrastats.log", "{tegrastats_ms}")
SWITCH = "ln -sfn releases/{release} {root}/.current.new && mv -T {root}/.current.new {root}/current"
# Newest first: current and the complete releases (`switch ok` in their steps.log) count towards --keep-releases;
# an incomplete release older than current is a failed or aborted deploy and goes; one newer than current may be
# a deploy still running elsewhere and stays. One line per release: kept, removed, removed-incomplete, in-progress.
PRUNE = (
    "cur=$(readlink {root}/current); cur=${{cur##*/}}; cd {root}/releases || exit 1; n=0; newer=1; "
    "for d in $(ls -1 | sort -r); do "
    'if [ "$d" = "$cur" ]; then newer=0; n=$((n+1)); echo "kept $d"; '
    "elif grep -q ' switch ok$' \"$d/out/steps.log\" 2>/dev/null; then n=$((n+1)); "
    'if [ $n -le {keep} ]; then echo "kept $d"; else rm -rf -- "$d" && echo "removed $d"; fi; '
    'elif [ $newer = 1 ]; then echo "in-progress $d"; '
    'else rm -rf -- "$d" && echo "removed-incomplete $d"; fi; done'
)
PGID_FILE = ".step-pgid"  # in out/: the process group of the step running now


@dataclass(frozen=True)
class Step:
    name: str
    what: str  # one line, for progress and --dry-run
    command: str  # POSIX-sh template
    needs: str | None = None  # a dvit subcommand the device must list
    when: str = "always"  # see skip_reason
    timeout: int = 900  # seconds


STEPS: tuple[Step, ...] = (
    Step("verify", "check every shipped file's sha256 on the device", "sha256sum -c --quiet SHA256SUMS"),
    Step("env", "device-side Python: a venv (--system-site-packages) with dvit-edge[{extras}]", ENV,
         when="managed_venv", timeout=1800),
    Step("commands", "list the dvit commands the device has", COMMANDS),
    Step("plugin", "build the plugin with the device's CUDA toolkit for its architecture", PLUGIN, when="plugin",
         timeout=1800),
    Step("build", "build the engines (engine and timing caches kept on the device between deploys; the release's "
         "engines are hard links into the cache)", BUILD, needs="build", when="build", timeout=7200),
    Step("reuse-engines", "reuse the engines (and plugin) of the current release, built from these graphs", REUSE,
         when="reuse"),
    Step("validate", "validate against the recorded PyTorch reference",
         DVIT + " validate --graphs {validate_graphs} --reference {rel}/{reference} --require auto --no-progress "
         "--json {out}/validation.json", needs="validate", when="reference", timeout=3600),
    Step("latency", "time the graphs, sampling tegrastats where the device has it", LATENCY, needs="latency",
         when="latency", timeout=3600),
    Step("report", "write the report", DVIT + " report --validation {out}/validation.json{latency_arg}{engines_arg} "
         "--reference {rel}/{reference} --out {out}/report", needs="report", when="report"),
    Step("switch", "point current at this release (atomically)", SWITCH),
    Step("prune", "keep the newest {keep} complete releases (current among them); remove older ones, and failed or "
         "aborted ones", PRUNE),
)
STEP_NAMES = tuple(s.name for s in STEPS)


def wrap(step: Step, index: int, command: str, out: str, rel: str, tail: int = 30) -> str:
    """The script actually run for a step: logs its output on the device, appends to out/steps.log, prints the
    output's last lines, and on failure the last `tail` lines of its stderr (shown by `dvit deploy`). The command
    runs in a process group of its own (setsid), recorded in out/.step-pgid while it runs (see abort_script)."""
    log = f"{out}/logs/{index:02d}-{step.name}"
    stamp = '"$(date -u +%Y-%m-%dT%H:%M:%SZ)"'
    return (
        PREFIX.format(rel=rel)
        + f"mkdir -p {out}/logs && echo {stamp} {step.name} start >> {out}/steps.log; "
        + f"setsid sh -c {shlex.quote(command)} > {log}.out 2> {log}.err & pid=$!; "
        + f'echo "$pid $$" > {out}/{PGID_FILE}; '
        + f"wait $pid; rc=$?; rm -f {out}/{PGID_FILE}; "
        + 'if [ $rc -eq 0 ]; then st=ok; else st="failed (exit $rc)"; fi; '
        + f'echo {stamp} {step.name} "$st" >> {out}/steps.log; '
        + f"tail -n 200 {log}.out; "
        + f"if [ $rc -ne 0 ]; then tail -n {int(tail)} {log}.err >&2; fi; exit $rc"
    )


def step_state(step: Step, out: str) -> str:
    """Reads what the device knows of `step` (after the connection was lost): its last steps.log line, and
    `running=PGID` while its process group lives."""
    return (f"grep ' {step.name} ' {out}/steps.log 2>/dev/null | tail -n 1; pg=; "
            f"read pg w 2>/dev/null < {out}/{PGID_FILE}; "
            'if [ -n "$pg" ] && kill -0 -"$pg" 2>/dev/null; then echo "running=$pg"; fi; true')


def abort_script(layout: Layout, wait_s: float = 10.0) -> str:
    """After an interrupt: stop the step running in the release (TERM to its process group, KILL after `wait_s`),
    wait for the step's wrapper shell to end, then remove the release unless it is current. Prints `stopped PGID`,
    then `current`, `removed` or `left`."""
    rel, tries = layout.rel, max(1, int(wait_s * 10))
    return (
        f"pg=; w=; read pg w 2>/dev/null < {layout.out}/{PGID_FILE}; "
        'if [ -n "$pg" ] && kill -0 -"$pg" 2>/dev/null; then kill -TERM -"$pg" 2>/dev/null; i=0; '
        f'while kill -0 -"$pg" 2>/dev/null && [ $i -lt {tries} ]; do sleep 0.1; i=$((i+1)); done; '
        'kill -KILL -"$pg" 2>/dev/null; echo "stopped $pg"; fi; '
        'if [ -n "$w" ]; then i=0; while kill -0 "$w" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; '
        'kill -KILL "$w" 2>/dev/null; fi; '
        f'if [ "$(readlink {layout.current})" = "releases/{layout.release}" ]; then echo current; exit 0; fi; '
        f"i=0; while [ -e {rel} ] && [ $i -lt 5 ]; do rm -rf {rel} 2>/dev/null || sleep 0.5; i=$((i+1)); done; "
        f"if [ -e {rel} ]; then echo left; else echo removed; fi"
    )


def skip_line(step: Step, out: str, reason: str) -> str:
    """Record a skipped step in the device's steps.log too."""
    return (f"mkdir -p {out}/logs && echo \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" {step.name} skipped: "
            f"{shlex.quote(reason)} >> {out}/steps.log")


# ---------------------------------------------------------------------------------------------- layout
_SAFE_PATH = re.compile(r"^[A-Za-z0-9._/~+-]+$")


@dataclass(frozen=True)
class Layout:
    """Remote paths: `root` for shell commands ($HOME expanded by the device's shell), `rsync_root` for rsync."""

    root: str
    rsync_root: str
    release: str

    @classmethod
    def make(cls, remote_dir: str, release: str) -> Layout:
        if not _SAFE_PATH.match(remote_dir) or "/../" in f"/{remote_dir}/" or remote_dir.strip("/~") == "":
            raise ValueError(remote_dir)
        d = remote_dir.rstrip("/")
        if d.startswith("/"):
            return cls(d, d, release)
        rel = d[2:] if d.startswith("~/") else d.lstrip("~")
        return cls(f"$HOME/{rel}", rel, release)

    @property
    def rel(self) -> str:
        return f"{self.root}/releases/{self.release}"

    @property
    def rsync_rel(self) -> str:
        return f"{self.rsync_root}/releases/{self.release}"

    @property
    def out(self) -> str:
        return f"{self.rel}/out"

    @property
    def cache(self) -> str:
        return f"{self.root}/cache"

    @property
    def current(self) -> str:
        return f"{self.root}/current"

    @property
    def venv(self) -> str:
        return f"{self.root}/venv"


def make_release_dir(layout: Layout) -> str:
    """Creates the fresh release directory; `mkdir` without -p fails if it exists (never reuse a release)."""
    return f"mkdir -p {layout.root}/releases {layout.cache} && mkdir {layout.rel}"


def rsync_ship_options(link_dest: bool) -> list[str]:
    """Options for shipping: content-compared (--checksum), hard links to the current release's unchanged files."""
    opts = ["-a", "--checksum", "--out-format=%i %n"]
    if link_dest:
        opts.append("--link-dest=../../current/")  # relative to the destination: ROOT/releases/TS/ -> ROOT/current
    return opts


FETCH_EXCLUDES = ("*.plan", "*.engine", "*.trt", "*.so", "*.onnx", "*.timing", "*.cache", "*.npz")


def rsync_fetch_options() -> list[str]:
    """What comes back: logs, JSON, reports, layer reports; not the engines and libraries themselves."""
    opts = ["-a", "--max-size=50m"]
    for pattern in FETCH_EXCLUDES:
        opts += ["--exclude", pattern]
    return opts


# ---------------------------------------------------------------------------------------------- context
def context(layout: Layout, **values: Any) -> dict[str, Any]:
    """Placeholders for the templates; `values` adds the deploy's own (py, target, archs, ...)."""
    ctx: dict[str, Any] = {
        "root": layout.root, "rel": layout.rel, "out": layout.out, "cache": layout.cache, "current": layout.current,
        "venv": layout.venv, "release": layout.release,
    }
    ctx.update(values)
    ctx["dvit"] = DVIT.format(**ctx)
    return ctx


def render(step: Step, ctx: dict[str, Any]) -> str:
    return step.command.format(**ctx)


def parse_commands(help_text: str) -> list[str]:
    """The subcommands `dvit --help` lists (argparse puts each at four spaces under 'COMMAND')."""
    return re.findall(r"^ {4}([a-z][a-z0-9-]*)(?:\s|$)", help_text, re.MULTILINE)


@dataclass
class Conditions:
    """What decides which steps run (filled from options and preflight facts)."""

    managed_venv: bool
    building: bool
    only_validate: bool
    reference: bool
    plugin_buildable: bool
    plugin_why_not: str | None = None
    commands: list[str] | None = None  # from `dvit --help`; None until known
    current_has_engines: bool = True  # whether ROOT/current/out/engines exists (preflight)
    has_gpu: bool | None = None  # whether the device has a GPU to run engines on (preflight); None: unknown


def skip_reason(step: Step, c: Conditions, ran: dict[str, str]) -> str | None:
    """None when `step` runs; else why it is skipped (recorded in the step log). `ran` maps earlier steps to
    their status ('ok', 'skipped', 'failed')."""
    if step.when == "managed_venv" and not c.managed_venv:
        return "--remote-python given: the device's interpreter is used as it is"
    if step.when in ("plugin", "build") and not c.building:
        return "--only-validate" if c.only_validate else "--no-build: the engines of the current release are reused"
    if step.when == "plugin" and not c.plugin_buildable:
        return c.plugin_why_not or "the device cannot build the plugin"
    if step.when == "reuse" and c.building:
        return "engines are built in this release"
    if step.when == "reuse" and not c.current_has_engines and c.commands is not None and "build" not in c.commands:
        return "the current release has no engines to reuse (`dvit build` is not available on the device)"
    if step.when in ("reference", "report") and not c.reference:
        return "no --reference REF.npz given: nothing to validate against"
    if step.when == "latency" and c.only_validate:
        return "--only-validate"
    if step.when == "latency" and c.has_gpu is False and "ok" in (ran.get("build"), ran.get("reuse-engines")):
        return "no GPU on the device: the engines cannot run, so there is nothing to time"
    if step.when == "report" and ran.get("validate") != "ok":
        return "no validation result to report"
    if step.needs and c.commands is not None and step.needs not in c.commands:
        return (f"`dvit {step.needs}` is not available on the device (its dvit lists: {', '.join(c.commands)}); "
                "the step is skipped, not replaced")
    return None


CONDITION_TEXT = {
    "always": "always",
    "managed_venv": "unless --remote-python is given",
    "plugin": "unless --no-build/--only-validate; when the device has nvcc, cmake and TensorRT headers",
    "build": "unless --no-build/--only-validate; when the device's dvit has `build`",
    "reuse": "with --no-build/--only-validate",
    "reference": "with --reference; when the device's dvit has `validate`",
    "latency": "unless --only-validate; when the device's dvit has `latency`; not where engines were built or "
               "reused but no GPU can run them",
    "report": "when validate succeeded; when the device's dvit has `report`",
}
