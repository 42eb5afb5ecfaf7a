"""`dvit inspect ENGINE`: which TensorRT built a plan, what its engine manifest says, and whether it loads here.

A plan loads only into the release that built it, and a failed load says little ("Version tag does not match").
This reads the plan's header instead (pipeline.backend.tensorrt.plan_header: no deserialization, no GPU), the manifest of the
engine set it belongs to (its folder's parent, as `dvit build` lays it out, or --manifest), and compares the
plan with every TensorRT installed here. A plan that cannot load here is named with what to do ("rebuild: ...")
and the command exits 1 before anyone tries. Imports neither torch nor TensorRT unless TensorRT is installed.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backend.tensorrt import MODULES, BackendError
from .backend.tensorrt import cuda as cuda_buffers
from .backend.tensorrt import load as load_backend
from .backend.tensorrt.plan_header import PlanHeader, check_compatible, read_plan_header
from .errors import DvitError, ManifestError
from .graphset import GraphEntry, GraphSet
from .io import sha256_file
from .manifest import MANIFEST_NAME
from .targets import backend_label


@dataclass
class Inspection:
    header: PlanHeader
    engines: GraphSet | None = None
    entry: GraphEntry | None = None
    installed: dict[str, str] = field(default_factory=dict)  # backend name -> version
    problem: str | None = None  # "rebuild: ..." (exit 1) or "unknown: ..."
    notes: list[str] = field(default_factory=list)

    @property
    def must_rebuild(self) -> bool:
        return bool(self.problem and self.problem.startswith("rebuild:"))

    def to_dict(self) -> dict[str, Any]:
        m = self.engines.manifest if self.engines else {}
        return {
            "header": self.header.to_dict(), "installed": self.installed, "problem": self.problem,
            "notes": self.notes, "engine_set": str(self.engines.root) if self.engines else None,
            "target": m.get("target"), "backend": {k: (m.get("backend") or {}).get(k) for k in ("backend", "version")},
            "entry": {"batch": self.entry.batch, "name": self.entry.name, **self.entry.info} if self.entry else None,
        }


def inspect(engine: str | Path, manifest: str | Path | None = None) -> Inspection:
    path = Path(engine)
    header = read_plan_header(path)
    if header.backend is None:
        raise DvitError(f"{path} is not a TensorRT plan (it starts with {header.tag!r}, not ftrt, ptrt or vtrt): "
                        "pass an engine written by `dvit build`")
    result = Inspection(header)
    result.engines, result.entry, note = find_entry(path, manifest)
    if note:
        result.notes.append(note)
    if result.entry is not None and sha256_file(path) != result.entry.sha256:
        result.notes.append(f"{path.name} differs from the engine the manifest lists as {result.entry.file} (another "
                            "build, or modified): what the manifest says may not apply")
    result.installed = installed_backends()
    result.problem = compatibility(header, result.installed)
    if result.problem is None and (gpu_problem := gpu_compatibility(header)):
        result.problem = gpu_problem
    if not result.installed:
        result.notes.append("no TensorRT is installed here: whether the plan loads was not checked")
    return result


def find_entry(engine: Path, manifest: str | Path | None) -> tuple[GraphSet | None, GraphEntry | None, str | None]:
    """(engine set, its entry for `engine`, a note). Without --manifest, the engine's folder's parent and the
    folder itself are tried; a copy elsewhere is matched by its b{B}/<name>.plan tail."""
    roots = [Path(manifest)] if manifest is not None else [engine.parent.parent, engine.parent]
    tail = f"{engine.parent.name}/{engine.name}"
    for root in roots:
        if manifest is None and not (root / MANIFEST_NAME).is_file():
            continue
        try:
            gs = GraphSet.load(root, ("engine",), verify=False)
        except ManifestError:
            if manifest is not None:
                raise
            continue
        for e in gs.entries():
            if e.path.resolve() == engine.resolve():
                return gs, e, None
        for e in gs.entries():
            if e.file == tail:
                return gs, e, f"{engine} is not in {gs.root}; shown: its entry for {e.file}"
        return gs, None, f"{gs.root}/{MANIFEST_NAME} lists no engine {engine.name}"
    looked = " or ".join(str(r) for r in roots)
    return None, None, f"no engine manifest found in {looked}: pass --manifest DIR (the `dvit build --out` folder)"


def installed_backends() -> dict[str, str]:
    """Every TensorRT flavour importable here, with its version; absent ones are skipped."""
    found = {}
    for name in MODULES:
        try:
            found[name] = load_backend(name).version
        except BackendError:
            continue
    return found


def compatibility(header: PlanHeader, installed: dict[str, str]) -> str | None:
    """plan_header's verdict against the installed flavour of the plan's kind, else against any installed one."""
    name = header.backend if header.backend in installed else next(iter(installed), None)
    return None if name is None else check_compatible(header, name, installed[name])


def gpu_compatibility(header: PlanHeader) -> str | None:
    """A TensorRT-RTX plan names its SMs: when a GPU is present, it must be one of them."""
    sms = [s for s in header.fields.get("compute_capabilities") or [] if isinstance(s, int)]
    if not sms or not cuda_buffers.gpu_available()[0]:
        return None
    info = cuda_buffers.device_info()
    sm = int(str(info["compute_capability"]).replace(".", ""))
    if sm in sms:
        return None
    return (f"rebuild: {Path(header.path).name} was built for sm_{', sm_'.join(map(str, sms))}, this GPU "
            f"({info['name']}) is sm_{sm}: rebuild it with a target listing {sm}")


# ---------------------------------------------------------------------------------------------- text
def render(r: Inspection) -> str:
    lines = [r.header.describe()]
    if r.engines is not None:
        m = r.engines.manifest
        t, b = m.get("target") or {}, m.get("backend") or {}
        ccs = ", ".join(f"sm_{c}" for c in m.get("compute_capabilities") or [])
        lines.append(f"  engine set: {r.engines.root} (kind {r.engines.kind}; built for target "
                     f"{t.get('name') if isinstance(t, dict) else t} with {backend_label(str(b.get('backend')))} "
                     f"{b.get('version')}{'; ' + ccs if ccs else ''})")
    if r.entry is not None:
        e, info = r.entry, r.entry.info
        what = f"stage {e.index} (keeps {e.keep_count} tokens)" if e.role == "stage" and e.keep_count else e.name
        precision = info.get("precision")
        precision = ",".join(precision) if isinstance(precision, list) else precision
        lines.append(f"  graph: {what} at batch {e.batch}, precision {precision}")
        src = info.get("source") or {}
        source_set = (r.engines.manifest.get("source_graphs") or {}) if r.engines else {}
        lines.append(f"  source graph: {src.get('graph')} (sha256 {str(src.get('sha256'))[:12]}) of the "
                     f"{src.get('kind')} graph set {source_set.get('path', '?')}")
        cache = info.get("cache") or {}
        lines.append(f"  engine: {int(info.get('bytes', 0)) / 2**20:.2f} MiB, built in {info.get('build_seconds')} s"
                     f"{' (reused from the engine cache)' if cache.get('status') == 'reused' else ''}")
        io = " -> ".join(", ".join(f"{t.name} {t.dtype} {list(t.shape)}" for t in side)
                         for side in (e.inputs, e.outputs))
        lines.append(f"  tensors: {io}")
        s = info.get("layer_summary") or {}
        report = (info.get("layers") or {}).get("file")
        if s:
            lines.append(f"  layers: {s.get('layers')} (Q/DQ {s.get('qdq_layers')}, plugin {s.get('plugin_layers')}, "
                         f"HALF tensors {s.get('half_tensors')}, INT8 tensors {s.get('int8_tensors')}); report {report}")
        lines += [f"  note: {n}" for n in info.get("notes") or []]
    here = ", ".join(f"{backend_label(n)} {v}" for n, v in r.installed.items()) or "no TensorRT"
    verdict = r.problem or "the plan's backend and version match: it should load here"
    lines.append(f"  this machine: {here}: {verdict}")
    lines += [f"  note: {n}" for n in r.notes]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- CLI
def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Say which TensorRT (or TensorRT-RTX) release built a serialized engine, from its header alone (no GPU, "
        "nothing deserialized), what the engine manifest of `dvit build` says about it (target, source graph, "
        "precision, layer report), and whether the TensorRT installed here can load it. Exits 1 when it cannot "
        "(rebuild it here).")
    parser.add_argument("engine", metavar="ENGINE", help="a .plan file (e.g. runs/engines/b8/stage1.plan)")
    parser.add_argument("--manifest", default=None, metavar="DIR",
                        help="the engine set's folder (default: the engine's folder's parent, as `dvit build` writes)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def main(args: argparse.Namespace) -> int:
    r = inspect(args.engine, args.manifest)
    sys.stdout.write(json.dumps(r.to_dict(), indent=2, default=str) + "\n" if args.json else render(r))
    if r.problem:
        print(f"dvit inspect: warning: {r.problem}", file=sys.stderr)
    return 1 if r.must_rebuild else 0
