"""Every remote command of one deploy, rendered in one place: the run executes these strings, `--dry-run` prints
the same calls' output.

A command depends on the options, the target, the layout on the device and the bundle (all fixed when a deploy
starts), and for the steps also on what only the device can tell: its facts from preflight (nvcc, headers, CPUs,
GPU) and how the steps before went (`ran`: step name -> ok, skipped or failed). The run passes both; `--dry-run`
has neither, and each value they decide then reads as what decides it (`<nvcc found by preflight>`,
`DIR/engines (engines built) | DIR/graphs`, `[--latency FILE]`), in the same place of the same command.
"""
from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..targets import Target
from . import bundle as bundle_mod
from . import remote
from .options import DeployOptions
from .preflight import DeviceFacts, Requirements, facts_script, requirements
from .ssh import Ssh

# Where TensorRT's headers usually are on the device (JetPack: /usr/include/aarch64-linux-gnu).
HEADER_DIRS = ("/usr/include/aarch64-linux-gnu", "/usr/include/x86_64-linux-gnu", "/usr/include",
               "/usr/local/tensorrt/include", "/opt/tensorrt/include")
PLUGIN_LIB = "libdvit_trt_plugins.so"


def header_dirs(tensorrt_root: str | None) -> list[str]:
    if not tensorrt_root:
        return list(HEADER_DIRS)
    r = tensorrt_root.rstrip("/")
    return [f"{r}/include", r]


def plugin_archs(target: Target, facts: DeviceFacts | None, override: str | None) -> str:
    """The CUDA architectures to build the plugin for: --cuda-archs, else the device's own SM when the target
    lists it, else every architecture of the target."""
    if override:
        return override
    if facts is not None and facts.compute_capability in target.compute_capabilities:
        cc = facts.compute_capability
        return next((a for a in target.cuda_archs if re.match(rf"^{cc}(?![0-9])", a)), str(cc))
    return target.cuda_archs_cmake


def plugin_key(b: bundle_mod.Bundle, archs: str, facts: DeviceFacts) -> str:
    """The device's plugin cache key: sources, architectures, nvcc, headers, CUDA and backend version."""
    h = hashlib.sha256()
    for part in (b.plugin_sources_sha256(), archs, facts.trt_headers or "", facts.nvcc or "", facts.cuda or "",
                 facts.backend_version(b.target.backend) or ""):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def _either(known: bool | None, yes: str, no: str, yes_when: str, no_when: str = "") -> str:
    """`yes` or `no`; both, each with what picks it, while `known` is None (--dry-run)."""
    if known is None:
        return f"{yes} ({yes_when}) | {no}" + (f" ({no_when})" if no_when else "")
    return yes if known else no


def _maybe(known: bool | None, arg: str) -> str:
    """`arg` (' --flag value') or nothing; '[--flag value]' while `known` is None (--dry-run)."""
    if known is None:
        return f" [{arg.lstrip()}]"
    return arg if known else ""


@dataclass(frozen=True)
class Rsync:
    """One rsync transfer: `Ssh.rsync(sources, dest, *options)` runs it, `argv` is what that runs."""

    sources: tuple[str, ...]
    dest: str
    options: tuple[str, ...]

    def argv(self, ssh: Ssh) -> list[str]:
        return ssh.rsync_argv(list(self.sources), self.dest, *self.options)

    def text(self, ssh: Ssh) -> str:
        return " ".join(shlex.quote(a) for a in self.argv(ssh))


@dataclass(frozen=True)
class Renderer:
    """The remote commands of one deploy (`opts` for `target`, into `layout`, shipping `bundle`)."""

    opts: DeployOptions
    target: Target
    layout: remote.Layout
    bundle: bundle_mod.Bundle

    # ------------------------------------------------------------------ before the steps
    def preflight(self) -> str:
        """The preflight script (reads only)."""
        python = shlex.quote(self.opts.remote_python) if self.opts.remote_python else "python3"
        return facts_script(self.layout.root, python, header_dirs(self.opts.tensorrt_root))

    def release_dir(self) -> str:
        return remote.make_release_dir(self.layout)

    def ship(self, ssh: Ssh, staged: str, link_dest: bool) -> Rsync:
        """The bundle staged in local folder `staged` into the release directory."""
        return Rsync((f"{staged}/",), ssh.remote_path(f"{self.layout.rsync_rel}/"),
                     tuple(remote.rsync_ship_options(link_dest)))

    def fetch(self, ssh: Ssh, dest: str) -> Rsync:
        """The release's out/ (logs, JSON, reports) into local folder `dest`."""
        return Rsync((ssh.remote_path(f"{self.layout.rsync_rel}/out/"),), f"{dest}/",
                     tuple(remote.rsync_fetch_options()))

    # ------------------------------------------------------------------ the steps
    def context(self, facts: DeviceFacts | None = None,
                ran: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The placeholders of the step templates: the layout's, the options' and `decided(facts, ran)`."""
        o, b = self.opts, self.bundle
        py = o.remote_python or f"{self.layout.venv}/bin/python"
        return remote.context(
            self.layout, py=shlex.quote(py) if o.remote_python else py, target=self.target.name,
            reference=b.reference or "", keep=o.keep_releases,
            tegrastats_ms=int(o.tegrastats_ms), latency_extra="".join(" " + shlex.quote(a) for a in o.latency_args),
            **self.decided(facts, ran))

    def decided(self, facts: DeviceFacts | None = None, ran: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The placeholders the device decides: its facts from preflight and `ran`, the steps so far (step name ->
        ok, skipped, failed). Both are None in a dry run, and each value then says what decides it."""
        o, b, out, rel = self.opts, self.bundle, self.layout.out, self.layout.rel
        archs = plugin_archs(self.target, facts, o.cuda_archs)
        if facts is None:
            device: dict[str, Any] = {
                "nvcc": "<nvcc found by preflight>", "trt_include": "<TensorRT include dir found by preflight>",
                "jobs": o.jobs or "<device cpus>", "plugin_key": "<sources+archs+nvcc+headers hash>",
                "extras": "device<,cuda12|cuda13: the device's CUDA major, where engines run>"
                          "<,onnxruntime: where they cannot>"}
        else:
            device = {"nvcc": facts.nvcc or "nvcc", "trt_include": facts.trt_headers or "",
                      "jobs": o.jobs or facts.cpus or 2, "plugin_key": plugin_key(b, archs, facts),
                      "extras": self.requirements(facts).spec}
        engines = None if ran is None else ran.get("build") == "ok" or ran.get("reuse-engines") == "ok"
        gpu = None if facts is None else facts.has_gpu
        plugin = None if ran is None else ran.get("plugin") == "ok"
        lib = f"{out}/plugins/{PLUGIN_LIB}"
        return {
            "archs": archs, **device,
            "plugin_lib_arg": f" --plugin-lib {lib}" if b.uses_plugin and plugin is not False else "",
            "validate_graphs": _either(None if engines is None or gpu is None else engines and gpu,
                                       f"{out}/engines", f"{rel}/graphs", "GPU present and engines built", "no GPU"),
            "latency_graphs": _either(engines, f"{out}/engines", f"{rel}/graphs", "engines built"),
            "latency_backend": _either(engines, "tensorrt", "onnxruntime", "engines built"),
            "latency_plugin_arg": f" --plugin-lib {lib}" if b.uses_plugin and engines is not False else "",
            "latency_arg": _maybe(None if ran is None else ran.get("latency") == "ok",
                                  f" --latency {out}/latency.json"),
            "engines_arg": _maybe(engines, f" --engines {out}/engines"),
        }

    def requirements(self, facts: DeviceFacts) -> Requirements:
        """What the device's Python needs for this deploy (preflight.requirements)."""
        return requirements(facts, host=self.opts.host, uses_plugin=self.bundle.uses_plugin,
                            validating=self.opts.reference is not None, timing=not self.opts.only_validate)

    def step(self, step: remote.Step, facts: DeviceFacts | None = None,
             ran: Mapping[str, str] | None = None) -> str:
        """The command of `step` (unwrapped: what StepRecord.command records)."""
        return remote.render(step, self.context(facts, ran))

    def wrapped(self, step: remote.Step, index: int, command: str) -> str:
        """What is run for a step: `command` with its logs kept on the device (remote.wrap)."""
        return remote.wrap(step, index, command, self.layout.out, self.layout.rel)

    def skipped(self, step: remote.Step, reason: str) -> str:
        """What is run for a skipped step: a line in the device's steps.log."""
        return remote.skip_line(step, self.layout.out, reason)

    def step_state(self, step: remote.Step) -> str:
        """What the device knows of `step` (read after the connection was lost; remote.step_state)."""
        return remote.step_state(step, self.layout.out)

    def abort(self) -> str:
        """After an interrupt: stop the running step's process group, remove the release unless it is current."""
        return remote.abort_script(self.layout)
