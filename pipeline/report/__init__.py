"""`dvit report`: one readable page from what validation, latency measurement and the engine build wrote.

    dvit report --validation V1.json [V2.json ...] [--latency L.json ...] [--engines DIR ...]
                [--reference REF.npz] --out DIR [--title TITLE]

writes, atomically (the directory appears complete or not at all):
  * DIR/report.html: one self-contained page (CSS inline, plots as inline SVG, pictures as PNG data URIs; no
    script, no font and no file outside it is loaded, so it opens offline and can be mailed as it is);
  * DIR/report.md: the summary and the key tables in Markdown;
  * DIR/report.json: everything the page was made from (the inputs as read, each with its sha256, and the
    figures derived from them), format "dvit-edge/report/v1".

Inputs
  * validation JSONs ("dvit-edge/validation/v2", `dvit validate --json`): one table row each (stage chain and
    fused graph); the first one is the headline. Each graph set's manifest is read where its directory still
    exists (keep ratio, checkpoint; its hash is compared with the one the validation recorded);
  * latency JSONs ("dvit-edge/latency/v1"): pruned against dense per backend, precision and batch, the FLOPs
    ratio (the limit a pruned model's latency ratio tends to) beside the measured ratio; backends that could not
    run are reported in place of their numbers;
  * engine graph sets (`dvit build` output, kind "engine"; hashes verified): backend, version, target, and the
    layer precisions from the layer reports beside the engines where present;
  * a recording (REF.npz from `dvit reference`): the first test images with the patches pruned at each stage
    greyed out. It must come from the model of one of the validated graph sets.
Several validations whose graph sets have different keep ratios add accuracy (and, with latency, the latency
ratio) against the keep ratio.

Imports neither torch, timm nor ModelOpt: a Jetson makes the report on the device. Bad input stops with one line
(pipeline.errors.DvitError).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ModelConfig
from ..errors import ConfigError, DvitError
from ..io import atomic_dir, sha256_file
from ..targets import backend_label

FORMAT = "dvit-edge/report/v1"
# Written by `dvit validate` and the latency benchmark; named here, not imported: a stage imports no other stage.
VALIDATION_FORMAT = "dvit-edge/validation/v2"
LATENCY_FORMAT = "dvit-edge/latency/v1"
REFERENCE_FORMAT = "dvit-edge/reference/v1"
DEFAULT_IMAGES = 6
FILES = ("report.html", "report.md", "report.json")
MINUS = "\u2212"
TIMES = "\u00d7"


# ---------------------------------------------------------------- number formats (shared by the page and the Markdown)
def pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def signed_points(x: float | None) -> str:
    if x is None:
        return "-"
    s = f"{abs(x):.2f}"
    sign = "\u00b1" if s == "0.00" else MINUS if x < 0 else "+"
    return f"{sign}{s} points"


def ms(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}" if x >= 1 else f"{x:.3f}"


def ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}{TIMES}"


def sci(x: float | None) -> str:
    if x is None:
        return "-"
    return "0" if x == 0 else f"{x:.1e}".replace("e-0", "e-").replace("e+0", "e+")


def fixed(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def precision_label(prec: Sequence[str]) -> str:
    p = [str(x).upper() for x in prec]
    return p[0] if p and len(set(p)) == 1 else "/".join(p) or "-"


def short(sha: str | None, n: int = 12) -> str:
    return "-" if not sha else str(sha)[:n]


def backend_name(backend: str) -> str:
    """A backend as people write it: tensorrt -> TensorRT, onnxruntime-cpu -> ONNX Runtime (CPU)."""
    b = str(backend)
    low = b.lower()
    for prefix, label in (("onnxruntime", "ONNX Runtime"), ("ort", "ONNX Runtime"), ("pytorch", "PyTorch"),
                          ("torch", "PyTorch")):
        if low == prefix or low.startswith((prefix + "-", prefix + "_")):
            rest = b[len(prefix) + 1:]
            return f"{label} ({rest.upper() if rest.lower() in ('cpu', 'cuda', 'gpu') else rest})" if rest else label
    return backend_label(b)


def providers_name(providers: Sequence[str]) -> str:
    first = str(providers[0]) if providers else ""
    dev = {"CPUExecutionProvider": "CPU", "CUDAExecutionProvider": "CUDA", "TensorrtExecutionProvider": "TensorRT EP"}
    return f"ONNX Runtime ({dev.get(first, first.replace('ExecutionProvider', '') or '?')})"


# ---------------------------------------------------------------- inputs
@dataclass
class Source:
    role: str  # validation, latency, engines, reference
    path: Path
    sha256: str


@dataclass
class Inputs:
    validations: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    latencies: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    engines: list[Any] = field(default_factory=list)  # GraphSet of kind "engine"
    reference: Any = None  # runners.recorded.Recording
    sources: list[Source] = field(default_factory=list)


def _read_json(path: str | Path, what: str, fix: str) -> tuple[Path, dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        raise DvitError(f"{what} {p} not found: {fix}")
    try:
        obj = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DvitError(f"{p} is not a readable JSON file ({e}): {fix}") from e
    if not isinstance(obj, dict):
        raise DvitError(f"{p} is not a {what} (a JSON {type(obj).__name__}, not an object): {fix}")
    return p, obj


def _wrong_format(p: Path, obj: dict[str, Any], want: str, what: str, fix: str) -> DvitError:
    got = obj.get("format")
    if got == VALIDATION_FORMAT:
        return DvitError(f"{p} is a validation result, not a {what}: pass it with --validation")
    if got == LATENCY_FORMAT:
        return DvitError(f"{p} is a latency result, not a {what}: pass it with --latency")
    if isinstance(got, str) and got.startswith(want.rsplit("/", 1)[0] + "/"):
        return DvitError(f"{p} is a {what} of format {got}, this report reads {want}: {fix}")
    return DvitError(f"{p} is not a dvit {what} (format {got!r}, expected {want}): {fix}")


def _need(p: Path, obj: dict[str, Any], keys: Sequence[str], what: str, fix: str) -> None:
    missing = [k for k in keys if k not in obj]
    if missing:
        raise DvitError(f"{p} is a {what} without {', '.join(repr(k) for k in missing)} (truncated or hand-edited?): {fix}")


def load_validation(path: str | Path) -> tuple[Path, dict[str, Any]]:
    fix = "re-run 'dvit validate --graphs DIR --json OUT.json'"
    p, obj = _read_json(path, "validation result", fix)
    if obj.get("format") != VALIDATION_FORMAT:
        raise _wrong_format(p, obj, VALIDATION_FORMAT, "validation result", fix)
    _need(p, obj, ("graphs_dir", "manifest", "precision", "reference", "dataset", "chain", "fused", "chain_vs_fused",
                   "requirements"), "validation result", fix)
    for part in ("chain", "fused"):
        _need(p, obj[part], ("accuracy", "agreement", "logits", "kept"), f"validation result's {part} section", fix)
    return p, obj


def load_latency(path: str | Path) -> tuple[Path, dict[str, Any]]:
    fix = "re-run the latency measurement with its --json option"
    p, obj = _read_json(path, "latency result", fix)
    if obj.get("format") != LATENCY_FORMAT:
        raise _wrong_format(p, obj, LATENCY_FORMAT, "latency result", fix)
    _need(p, obj, ("runs",), "latency result", fix)
    if not isinstance(obj["runs"], list):
        raise DvitError(f"{p}: 'runs' is not a list: {fix}")
    for i, run in enumerate(obj["runs"]):
        if not isinstance(run, dict):
            raise DvitError(f"{p}: run {i} is not an object: {fix}")
        if "unavailable" in run:  # a backend that could not run: the reason instead of numbers
            _need(p, run, ("backend",), f"latency result's run {i}", fix)
            continue
        _need(p, run, ("backend", "model", "batch", "end_to_end"), f"latency result's run {i}", fix)
        if run["model"] not in ("pruned", "dense"):
            raise DvitError(f"{p}: run {i} has model {run['model']!r}, not 'pruned' or 'dense': {fix}")
        if not isinstance(run["end_to_end"], dict) or "p50_ms" not in run["end_to_end"]:
            raise DvitError(f"{p}: run {i} has no end_to_end p50_ms: {fix}")
    return p, obj


def load_engines(path: str | Path) -> Any:
    from ..graphset import GraphSet
    from ..manifest import MANIFEST_NAME

    root = Path(path)
    fix = "point --engines at the output of 'dvit build'"
    if not (root / MANIFEST_NAME).is_file():
        raise DvitError(f"--engines {root} has no {MANIFEST_NAME}: {fix}")
    _, raw = _read_json(root / MANIFEST_NAME, "engine manifest", fix)
    if raw.get("kind") != "engine":
        raise DvitError(f"--engines {root} holds a '{raw.get('kind')}' manifest, not engines: {fix}")
    return GraphSet.load(root, ("engine",))  # verifies every engine's (and layer report's) hash


def load_reference(path: str | Path) -> Any:
    from ..runners.recorded import load_recording

    return load_recording(path)


def read_inputs(validations: Sequence[str | Path], latencies: Sequence[str | Path] = (),
                engines: Sequence[str | Path] = (), reference: str | Path | None = None) -> Inputs:
    if not validations:
        raise DvitError("no validation result to report on: run 'dvit validate --graphs DIR --json V.json' first, "
                        "then pass --validation V.json")
    inp = Inputs()
    for v in validations:
        p, obj = load_validation(v)
        inp.validations.append((p, obj))
        inp.sources.append(Source("validation", p, sha256_file(p)))
    for lat in latencies:
        p, obj = load_latency(lat)
        inp.latencies.append((p, obj))
        inp.sources.append(Source("latency", p, sha256_file(p)))
    for d in engines:
        gs = load_engines(d)
        inp.engines.append(gs)
        inp.sources.append(Source("engines", gs.root / "manifest.json", gs.sha256))
    if reference is not None:
        rec = load_reference(reference)
        inp.reference = rec
        inp.sources.append(Source("reference", rec.path, str(rec.meta["npz"]["sha256"])))
        inp.sources.append(Source("reference", rec.path.with_suffix(".json"), sha256_file(rec.path.with_suffix(".json"))))
    return inp


# ---------------------------------------------------------------- graph sets named by the inputs
_manifests: dict[str, dict[str, Any] | None] = {}


def _manifest(graphs_dir: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """The raw manifest of a graph-set directory and its sha256, or (None, None) where it is not here."""
    if not graphs_dir:
        return None, None
    path = Path(graphs_dir) / "manifest.json"
    key = str(path.resolve()) if path.exists() else str(path)
    if key not in _manifests:
        try:
            _manifests[key] = {"manifest": json.loads(path.read_text()), "sha256": sha256_file(path)}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            _manifests[key] = None
    got = _manifests[key]
    return (got["manifest"], got["sha256"]) if got else (None, None)


def graph_set_info(v: dict[str, Any]) -> dict[str, Any]:
    """What the validated graph set was: from its manifest where the directory is here, else from the JSON."""
    m, sha = _manifest(v.get("graphs_dir"))
    keep_counts = [int(k["keep_count"]) for k in v["chain"]["kept"]]
    info: dict[str, Any] = {"dir": v.get("graphs_dir"), "kind": v["manifest"].get("kind"), "sha256": v["manifest"].get("sha256"),
                            "precision": list(v.get("precision") or []), "keep_counts": keep_counts, "keep_ratio": None,
                            "model": None, "config": None, "batch_sizes": None, "checkpoint": None,
                            "teacher_checkpoint": None, "manifest_here": m is not None, "manifest_matches": None}
    if m is not None:
        cfg = m.get("model_config") or {}
        info.update(keep_ratio=m.get("keep_ratio", cfg.get("keep_ratio")), model=cfg.get("name"), config=cfg or None,
                    batch_sizes=m.get("batch_sizes"), checkpoint=m.get("checkpoint"),
                    teacher_checkpoint=m.get("teacher_checkpoint"), manifest_matches=sha == info["sha256"])
    else:
        cfg = (v.get("model") or {}).get("config") or {}  # the validation JSON carries the model it validated
        info.update(keep_ratio=cfg.get("keep_ratio"), model=cfg.get("name"), config=cfg or None)
        ref = v.get("reference") or {}
        if ref.get("kind") == "pytorch" and ref.get("matches_manifest") and ref.get("checkpoint"):
            info["checkpoint"] = ref["checkpoint"]
        elif ref.get("kind") == "recorded" and ref.get("recording"):
            info["checkpoint"] = {"path": None, "sha256": ref["recording"].get("checkpoint_sha256")}
    return info


def _graphs_keep_ratio(graphs_dir: str | None) -> float | None:
    m, _ = _manifest(graphs_dir)
    if m is None:
        return None
    kr = m.get("keep_ratio", (m.get("model_config") or {}).get("keep_ratio"))
    return None if kr is None else float(kr)


def _graphs_label(graphs_dir: str | None, kind: str | None, keep_ratio: float | None = None) -> str:
    """How the report names a graph set: its directory's name and keep ratio ("export-0.5, keep 0.5")."""
    if not graphs_dir:
        return kind or "graphs"
    kr = _graphs_keep_ratio(graphs_dir) if keep_ratio is None else keep_ratio
    return Path(graphs_dir).name + (f", keep {kr:g}" if kr is not None else "")


# ---------------------------------------------------------------- validation rows
def validation_rows(validations: list[tuple[Path, dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for i, (p, v) in enumerate(validations):
        gs = graph_set_info(v)
        ref = v["reference"]
        chain, fused = v["chain"], v["fused"]
        iso = chain.get("kept_isolated") or [None] * len(chain["kept"])
        kept = []
        for c, f, s in zip(chain["kept"], fused["kept"], iso):
            kept.append({"stage": c["stage"], "keep_count": c["keep_count"], "chain_iou_mean": c.get("iou_mean"),
                         "chain_iou_min": c.get("iou_min"), "chain_identical": c.get("identical"),
                         "fused_iou_mean": f.get("iou_mean"), "fused_identical": f.get("identical"),
                         "isolated_iou_mean": (s or {}).get("iou_mean"), "isolated_identical": (s or {}).get("identical")})
        req = v["requirements"]
        kr = gs["keep_ratio"]
        label = f"{precision_label(gs['precision'])} {gs['kind'] or 'graphs'}" + (f", keep {kr:g}" if kr is not None else "")
        ref_acc = ref.get("accuracy")
        rows.append({
            "id": f"v{i + 1}", "file": str(p), "label": label, "graph_set": gs,
            "backend": providers_name(v.get("providers") or []) + (" + plugin reference op" if gs["kind"] == "plugin" else ""),
            "reference": {k: ref.get(k) for k in ("kind", "name", "accuracy", "matches_manifest")},
            "dataset": v.get("dataset"), "batch_size": v.get("batch_size"),
            "chain": {"accuracy": chain["accuracy"], "agreement": chain["agreement"],
                      "logits_max_abs": (chain.get("logits") or {}).get("max_abs")},
            "fused": {"accuracy": fused["accuracy"], "agreement": fused["agreement"],
                      "logits_max_abs": (fused.get("logits") or {}).get("max_abs")},
            "delta_points": None if ref_acc is None else 100 * (chain["accuracy"] - ref_acc),
            "fused_delta_points": None if ref_acc is None else 100 * (fused["accuracy"] - ref_acc),
            "chain_vs_fused": v["chain_vs_fused"], "batch_consistency": v.get("batch_consistency"),
            "kept": kept, "boundaries": chain.get("boundaries") or [], "isolated_logits": chain.get("isolated_logits"),
            "requirements": {"profile": req.get("profile"), "enforced": req.get("enforced"), "passed": req.get("passed"),
                             "failed": [c["name"] for c in req.get("checks", []) if not c.get("passed")],
                             "checks": req.get("checks", [])},
        })
    seen: dict[str, int] = {}
    for r in rows:  # two validations of one graph set (e.g. against PyTorch and a recording): say which is which
        seen[r["label"]] = seen.get(r["label"], 0) + 1
    for r in rows:
        if seen[r["label"]] > 1:
            r["label"] += f" vs {r['reference']['kind']}"
    return rows


# ---------------------------------------------------------------- latency
def _stats(s: dict[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(s, dict):
        return None
    keys = ("iterations", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "cv", "noisy")
    return {k: s.get(k) for k in keys}


def latency_section(latencies: list[tuple[Path, dict[str, Any]]]) -> dict[str, Any] | None:
    """Pruned runs paired with the dense run of the same graph set, backend, batch and I/O variant (io,
    cuda_graph), beside the FLOPs ratio of that graph set; runs that could not happen, with their reason."""
    if not latencies:
        return None
    comparisons: list[dict[str, Any]] = []
    unavailable: list[dict[str, Any]] = []
    files = []
    for fi, (p, lat) in enumerate(latencies):
        top = _flops(lat.get("flops"))
        per_set = {str(g.get("graphs")): g for g in lat.get("graph_sets") or [] if isinstance(g, dict)}
        files.append({"file": str(p), "machine": lat.get("machine") or {}, "settings": lat.get("settings") or {},
                      "flops": top or {}, "graph_sets": [{"graphs": g, "flops": _flops(x.get("flops"))}
                                                         for g, x in per_set.items()]})
        timed = [r for r in lat["runs"] if "unavailable" not in r]
        dense = [r for r in timed if r["model"] == "dense"]
        used: set[int] = set()
        for r in (r for r in timed if r["model"] == "pruned"):
            d = _dense_for(r, dense)
            if d is not None:
                used.add(id(d))
            comparisons.append(_comparison(fi, r, d, top, per_set))
        comparisons += [_comparison(fi, None, d, top, per_set) for d in dense if id(d) not in used]
        for u in [*(lat.get("unavailable") or []), *(r for r in lat["runs"] if "unavailable" in r)]:
            reason = u.get("reason", u.get("unavailable"))
            unavailable.append({"file_index": fi, "backend": u.get("backend"), "backend_label": backend_name(u.get("backend", "?")),
                                "reason": str(reason or "no reason given"), "graphs": u.get("graphs"), "batch": u.get("batch")})
    return {"files": files, "comparisons": comparisons, "unavailable": unavailable}


def _dense_for(r: dict[str, Any], dense: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The dense run timed like pruned run `r` (backend, batch, I/O variant), of its graph set where there is one."""
    variant = ("backend", "batch", "io", "cuda_graph")
    cands = [d for d in dense if all(d.get(k) == r.get(k) for k in variant)]
    same = [d for d in cands if d.get("graphs") == r.get("graphs")] or cands
    return next((d for d in same if d.get("precision") == r.get("precision")), same[0] if same else None)


def _flops(f: Any) -> dict[str, Any] | None:
    if not isinstance(f, dict):
        return None
    out = {k: f.get(k) for k in ("pruned", "dense", "ratio")}
    if out["ratio"] is None and out["pruned"] and out["dense"]:
        out["ratio"] = float(out["pruned"]) / float(out["dense"])
    return out


def mode_label(run: dict[str, Any]) -> str:
    """chain or fused, with the I/O variant of GPU runs: "fused, CUDA graph", "chain, device I/O"."""
    mode = str(run.get("mode") or "-")
    if run.get("cuda_graph"):
        return f"{mode}, CUDA graph"
    if run.get("io") == "device":
        return f"{mode}, device I/O"
    return mode


def _comparison(fi: int, r: dict[str, Any] | None, d: dict[str, Any] | None, top: dict[str, Any] | None,
                per_set: dict[str, dict[str, Any]]) -> dict[str, Any]:
    base = r or d or {}
    pruned, dense = _stats((r or {}).get("end_to_end")), _stats((d or {}).get("end_to_end"))
    measured = None
    if pruned and dense and pruned.get("p50_ms") and dense.get("p50_ms"):
        measured = float(pruned["p50_ms"]) / float(dense["p50_ms"])
    stages = (r or {}).get("stages")
    gs = per_set.get(str(base.get("graphs"))) or {}
    flops = _flops(gs.get("flops")) or top or {}
    kr = _graphs_keep_ratio(base.get("graphs"))
    if kr is None and isinstance(gs.get("model_config"), dict) and gs["model_config"].get("keep_ratio") is not None:
        kr = float(gs["model_config"]["keep_ratio"])
    return {
        "file_index": fi, "backend": base.get("backend"), "backend_label": backend_name(base.get("backend", "?")),
        "precision": base.get("precision"), "batch": base.get("batch"), "mode": mode_label(r or d or {}),
        "io": base.get("io"), "cuda_graph": base.get("cuda_graph"),
        "graphs": base.get("graphs"), "kind": base.get("kind"), "keep_ratio": kr,
        "graphs_label": _graphs_label(base.get("graphs"), base.get("kind"), kr),
        "pruned": pruned, "dense": dense, "dense_mode": (d or {}).get("mode"),
        "stages": [_stats(s) for s in stages] if isinstance(stages, list) else None,
        "gpu_pruned": _stats((r or {}).get("gpu")), "gpu_dense": _stats((d or {}).get("gpu")),
        "throughput_pruned": (r or {}).get("throughput_ips"), "throughput_dense": (d or {}).get("throughput_ips"),
        "measured_ratio": measured, "flops_ratio": flops.get("ratio"),
        "noisy": bool((pruned or {}).get("noisy") or (dense or {}).get("noisy")),
    }


def precision_text(p: Any) -> str:
    if p is None:
        return "-"
    if isinstance(p, (list, tuple)):
        return precision_label([str(x) for x in p])
    return precision_label(str(p).split(","))


# ---------------------------------------------------------------- engines
_DTYPE = re.compile(r"\b(FP32|FP16|BF16|FP8|FP4|INT8|Int8|INT4|Int4|Int32|INT32|Int64|INT64|Bool|BOOL|UInt8|UINT8|Float|Half)\b")
_DTYPE_NAMES = {"float": "fp32", "half": "fp16"}


def layer_precision(layer: Any) -> str:
    """A layer's precision from a TensorRT engine-inspector record (its first output's Format/Datatype), or
    from a plain {"precision": ...} record."""
    if not isinstance(layer, dict):
        return "unknown"
    for key in ("precision", "Precision"):
        if isinstance(layer.get(key), str):
            return layer[key].lower()
    outs = layer.get("Outputs") or layer.get("outputs") or []
    for o in outs if isinstance(outs, list) else []:
        fmt = o.get("Format/Datatype") if isinstance(o, dict) else None
        if isinstance(fmt, str):
            m = _DTYPE.search(fmt)
            if m:
                t = m.group(1).lower()
                return _DTYPE_NAMES.get(t, t)
    return "unknown"


def parse_layer_report(obj: Any) -> dict[str, Any]:
    """Layer count, precision histogram and reformat count of one engine's layer report."""
    layers = obj.get("Layers", obj.get("layers")) if isinstance(obj, dict) else obj
    if not isinstance(layers, list):
        raise ValueError("no list of layers")  # noqa: TRY004 (caught with the JSON errors: a bad report, not a bug)
    hist: dict[str, int] = {}
    reformats = 0
    detailed = False
    for layer in layers:
        if isinstance(layer, dict):
            detailed = True
            kind = str(layer.get("LayerType") or layer.get("type") or "")
            if kind.lower() in ("reformat", "reformatting") or "reformat" in str(layer.get("Name", "")).lower():
                reformats += 1
        p = layer_precision(layer)
        hist[p] = hist.get(p, 0) + 1
    order = ["fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4", "fp4"]
    ordered = dict(sorted(hist.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0])))
    return {"layers": len(layers), "precisions": ordered, "reformats": reformats if detailed else None, "detailed": detailed}


def _layer_report_file(root: Path, info: dict[str, Any]) -> Path | None:
    """The layer report an engine's manifest entry names (any *.json it lists, 'layer' keys first), else a JSON
    beside the engine named after it (<engine>.layers.json, <stem>.layers.json, <stem>.json)."""
    named: list[tuple[bool, str]] = []
    for k, val in info.items():
        f = val.get("file") if isinstance(val, dict) else val
        if isinstance(f, str) and f.endswith(".json"):
            named.append(("layer" not in k.lower(), f))
    for _, f in sorted(named):
        if (root / f).is_file():
            return root / f
    engine = root / str(info.get("file", ""))
    for cand in (engine.with_name(engine.name + ".layers.json"), engine.with_suffix(".layers.json"), engine.with_suffix(".json")):
        if cand.is_file() and cand != engine:
            return cand
    return None


def _scalar(v: Any) -> str | None:
    if v is None or isinstance(v, (dict, list)):
        return None
    return str(v)


def engine_provenance(m: dict[str, Any]) -> dict[str, Any]:
    """Backend, version, target and build settings of an engine manifest, wherever the build stage put them:
    `backend` (a name, or trt_backend.describe's {"backend", "version"}), `build` (trt_backend.config_json's
    {"backend", "version", ...}), `target` (a name or {"name", ...}), else the TensorRT package versions."""
    raw_build = m.get("build")
    build: dict[str, Any] = raw_build if isinstance(raw_build, dict) else {}
    b = m.get("backend")
    bd = b if isinstance(b, dict) else {}
    name = bd.get("backend") or bd.get("name") or (b if isinstance(b, str) else None) or build.get("backend")
    version = bd.get("version") or build.get("version") or m.get("backend_version")
    versions = m.get("versions") or {}
    if version is None and name:
        version = versions.get(str(name)) or versions.get(str(name).replace("-", "_"))
    t = m.get("target")
    target = (t.get("name") if isinstance(t, dict) else t) or build.get("target")
    settings = {k: v for k, v in build.items() if k not in ("backend", "version") and _scalar(v) is not None}
    for k in ("builder_flags", "compute_capabilities"):
        if isinstance(build.get(k), list):
            settings[k] = ", ".join(map(str, build[k]))
    return {"backend": name, "backend_label": backend_name(name) if name else None, "version": version,
            "target": target, "settings": settings}


def engine_section(engines: list[Any]) -> list[dict[str, Any]]:
    out = []
    for gs in engines:
        entries = []
        for e in gs.entries():
            f = _layer_report_file(gs.root, e.info)
            report: dict[str, Any] | None = None
            problem = None
            if f is None:
                problem = "no layer report beside the engine"
            else:
                try:
                    report = parse_layer_report(json.loads(f.read_text()))
                except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as err:
                    problem = f"layer report {f.name} not readable ({err})"
            entries.append({"batch": e.batch, "name": e.name, "file": e.file, "bytes": e.info.get("bytes"),
                            "keep_count": e.keep_count, "layer_report": None if f is None else str(f.relative_to(gs.root)),
                            "layers": report, "problem": problem})
        cfg = gs.config
        out.append({"dir": str(gs.root), "sha256": gs.sha256, "precision": gs.precision, "keep_ratio": cfg.keep_ratio,
                    "model": cfg.name, "checkpoint": gs.checkpoint, "batch_sizes": gs.batch_sizes,
                    **engine_provenance(gs.manifest), "entries": entries})
    return out


# ---------------------------------------------------------------- the recording and the pruned-token picture
def check_reference(rec: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The validated graph set the recording belongs to (same model config and checkpoint), refused when none."""
    model = rec.meta.get("model") or {}
    cfg = model.get("config") or {}
    sha = rec.checkpoint_sha256
    rec_counts = [int(rec.outputs[k].shape[1]) for k in sorted(rec.outputs) if k.startswith("kept_indices_")]
    for r in rows:
        gs = r["graph_set"]
        ck = (gs.get("checkpoint") or {}).get("sha256")
        if (gs["config"] is None or gs["config"] == cfg) and (ck is None or ck == sha) and gs["keep_counts"] == rec_counts:
            return r
    described = "; ".join(f"{r['graph_set']['dir']} (checkpoint {short((r['graph_set'].get('checkpoint') or {}).get('sha256'))}, "
                          f"keep counts {r['graph_set']['keep_counts']})" for r in rows)
    raise DvitError(
        f"{rec.path.name} was recorded from another model (checkpoint {short(sha)}, keep counts {rec_counts}) than the "
        f"validated graphs [{described}]: record one with 'dvit reference --graphs DIR --out REF.npz' for them"
    )


def token_pictures(rec: Any, count: int) -> tuple[dict[str, Any], list[Any]]:
    from .token_masks import pictures

    cfg = ModelConfig.from_dict((rec.meta.get("model") or {})["config"])
    if tuple(rec.data.images.shape[1:]) != (cfg.in_chans, cfg.img_size, cfg.img_size):
        raise DvitError(f"{rec.path.name} holds images of shape {tuple(rec.data.images.shape[1:])}, not the model's "
                        f"{(cfg.in_chans, cfg.img_size, cfg.img_size)}: re-run 'dvit reference'")
    pics = pictures(rec.data.images, rec.data.labels, rec.outputs, cfg, count)
    names = rec.data.classes if len(rec.data.classes) == cfg.num_classes else None
    info = {"file": str(rec.path), "npz_sha256": rec.meta["npz"]["sha256"], "checkpoint_sha256": rec.checkpoint_sha256,
            "dataset": rec.data.describe(), "model": cfg.name, "keep_ratio": cfg.keep_ratio, "grid": cfg.grid_size,
            "patch_size": cfg.patch_size, "num_patches": cfg.num_patches, "keep_counts": cfg.keep_counts,
            "pruning_loc": list(cfg.pruning_loc), "images": [p.to_dict(names) for p in pics]}
    return info, pics


# ---------------------------------------------------------------- keep-ratio sweep
def sweep(rows: list[dict[str, Any]], lat: dict[str, Any] | None) -> dict[str, Any] | None:
    """Accuracy (and measured/FLOPs latency ratio) against keep ratio, when graph sets of several keep ratios ran."""
    ratios = {r["graph_set"]["keep_ratio"] for r in rows if r["graph_set"]["keep_ratio"] is not None}
    if len(ratios) < 2:
        return None
    acc: dict[str, list[tuple[float, float]]] = {}
    ref: dict[float, float] = {}
    for r in rows:
        kr = r["graph_set"]["keep_ratio"]
        if kr is None:
            continue
        key = f"{precision_label(r['graph_set']['precision'])} chain, {r['backend']}"
        acc.setdefault(key, []).append((float(kr), 100 * r["chain"]["accuracy"]))
        if r["reference"]["accuracy"] is not None and r["reference"]["kind"] != "graphs":
            ref[float(kr)] = 100 * r["reference"]["accuracy"]
    latency: dict[str, list[tuple[float, float]]] = {}
    flops: dict[float, float] = {}
    for c in (lat or {}).get("comparisons", []):
        if c["keep_ratio"] is None or c["measured_ratio"] is None:
            continue
        key = f"{c['backend_label']} {precision_text(c['precision'])}, batch {c['batch']}, {c['mode']}"
        latency.setdefault(key, []).append((float(c["keep_ratio"]), c["measured_ratio"]))
        if c["flops_ratio"] is not None:
            flops[float(c["keep_ratio"])] = c["flops_ratio"]
    return {"keep_ratios": sorted(ratios), "accuracy": {k: sorted(v) for k, v in acc.items()},
            "reference_accuracy": sorted(ref.items()), "latency_ratio": {k: sorted(v) for k, v in latency.items()},
            "flops_ratio": sorted(flops.items())}


# ---------------------------------------------------------------- headline
def headline(rows: list[dict[str, Any]], lat: dict[str, Any] | None) -> dict[str, Any]:
    first = rows[0]
    passed = [r for r in rows if r["requirements"]["passed"]]
    h: dict[str, Any] = {
        "validation": first["id"], "label": first["label"], "reference": first["reference"]["name"],
        "reference_accuracy": first["reference"]["accuracy"], "accuracy": first["chain"]["accuracy"],
        "fused_accuracy": first["fused"]["accuracy"], "accuracy_delta_points": first["delta_points"],
        "agreement": first["chain"]["agreement"],
        "thresholds": {"passed": len(passed), "total": len(rows), "all_passed": len(passed) == len(rows),
                       "failed": [r["label"] for r in rows if not r["requirements"]["passed"]]},
        "keep_counts": first["graph_set"]["keep_counts"], "latency": None, "not_measured": [],
    }
    if lat:
        measured = [c for c in lat["comparisons"] if c["measured_ratio"] is not None]
        best = sorted(measured, key=lambda c: (c["file_index"], c["mode"] != "fused"))
        if best:
            c = best[0]
            h["latency"] = {k: c[k] for k in ("backend_label", "precision", "batch", "mode", "measured_ratio", "flops_ratio")}
            h["latency"].update(pruned_ms=c["pruned"]["p50_ms"], dense_ms=c["dense"]["p50_ms"])
        h["not_measured"] = list(dict.fromkeys(f"{u['backend_label']} not measured: {u['reason']}" for u in lat["unavailable"]))
    lt = h["latency"]
    t = h["thresholds"]
    h["text"] = {
        "accuracy": pct(h["accuracy"]), "reference_accuracy": pct(h["reference_accuracy"]),
        "accuracy_delta": signed_points(h["accuracy_delta_points"]), "agreement": pct(h["agreement"]),
        "latency_ratio": ratio(lt["measured_ratio"]) if lt else (
            "no dense run" if lat and any(c["pruned"] for c in lat["comparisons"]) else "not measured"),
        "thresholds": f"{t['passed']} of {t['total']} pass",
        "tokens": " \u2192 ".join(str(x) for x in _tokens_path(first)),
    }
    flops = lt["flops_ratio"] if lt else next((f["flops"]["ratio"] for f in (lat or {}).get("files", [])
                                                if f["flops"] and f["flops"].get("ratio") is not None), None)
    if flops is not None:
        h["text"]["flops_ratio"] = ratio(flops)
    return h


def _tokens_path(row: dict[str, Any]) -> list[int]:
    cfg = row["graph_set"].get("config")
    counts = list(row["graph_set"]["keep_counts"])
    if cfg:
        try:
            return [ModelConfig.from_dict(cfg).num_patches, *counts]
        except (ConfigError, TypeError):
            pass
    return counts


# ---------------------------------------------------------------- the whole report
def machine_here() -> dict[str, Any]:
    return {"hostname": platform.node(), "system": f"{platform.system()} {platform.release()}",
            "machine": platform.machine(), "python": platform.python_version()}


def build(inp: Inputs, title: str | None = None, images: int = DEFAULT_IMAGES) -> tuple[dict[str, Any], list[Any]]:
    """report.json's content, and the pictures (PNG bytes) for the page."""
    _manifests.clear()
    rows = validation_rows(inp.validations)
    lat = latency_section(inp.latencies)
    pictures: list[Any] = []
    masks = None
    if inp.reference is not None:
        owner = check_reference(inp.reference, rows)
        masks, pictures = token_pictures(inp.reference, images)
        masks["graphs"] = owner["label"]
    first = rows[0]["graph_set"]
    model = first.get("model") or (first.get("config") or {}).get("name")
    data: dict[str, Any] = {
        "format": FORMAT,
        "title": title or f"DynamicViT deployment report{f': {model}' if model else ''}",
        "created": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "made_on": machine_here(),
        "inputs": [{"role": s.role, "path": str(s.path), "sha256": s.sha256} for s in inp.sources],
        "headline": headline(rows, lat),
        "validations": rows,
        "latency": lat,
        "engines": engine_section(inp.engines),
        "token_masks": masks,
        "sweep": sweep(rows, lat),
        "sources": {"validations": [v for _, v in inp.validations], "latency": [x for _, x in inp.latencies],
                    "engine_manifests": [{k: v for k, v in gs.manifest.items() if not k.startswith("_")} for gs in inp.engines],
                    "reference": None if inp.reference is None else inp.reference.meta},
    }
    return data, pictures


def _safe(obj: Any) -> Any:
    """JSON without NaN/Infinity (not JSON; browsers and jq refuse them): such values become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_safe(v) for v in obj]
    return obj


def make_report(
    validations: Sequence[str | Path],
    out: str | Path,
    *,
    latencies: Sequence[str | Path] = (),
    engines: Sequence[str | Path] = (),
    reference: str | Path | None = None,
    title: str | None = None,
    images: int = DEFAULT_IMAGES,
) -> Path:
    """Write DIR/report.html, report.md and report.json (atomically); returns DIR.

    An existing DIR is replaced only when it holds a previous report (nothing else is ever deleted)."""
    from . import html, markdown

    if images < 0:
        raise ConfigError(f"--images {images} is negative: pass how many test images to picture (0 for none)")
    out = Path(out)
    if out.exists() and (not out.is_dir() or not (out / "report.json").is_file()
                         or not {p.name for p in out.iterdir()} <= set(FILES)):
        raise DvitError(f"{out} exists and is not a previous report: choose a new --out (a report replaces only a report)")
    inp = read_inputs(validations, latencies, engines, reference)
    data, pictures = build(inp, title, images)
    data = _safe(data)
    page = html.render(data, pictures)
    md = markdown.render(data)
    with atomic_dir(out) as tmp:
        (tmp / "report.html").write_text(page, encoding="utf-8")
        (tmp / "report.md").write_text(md, encoding="utf-8")
        (tmp / "report.json").write_text(json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n", encoding="utf-8")
    return out


# ---------------------------------------------------------------- CLI
def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--validation", nargs="+", default=[], metavar="V.json",
                   help="validation results written by 'dvit validate --json' (the first is the headline)")
    p.add_argument("--latency", nargs="+", default=[], metavar="L.json", help="latency results (pruned and dense, per backend)")
    p.add_argument("--engines", nargs="+", default=[], metavar="DIR",
                   help="engine graph sets written by 'dvit build' (provenance and layer precisions)")
    p.add_argument("--reference", default=None, metavar="REF.npz",
                   help="a recording made by 'dvit reference': pictures of the tokens pruned at each stage")
    p.add_argument("--images", type=int, default=DEFAULT_IMAGES, metavar="N",
                   help=f"test images to picture from --reference (default {DEFAULT_IMAGES})")
    p.add_argument("--title", default=None, help="the page's title")
    p.add_argument("--out", required=True, metavar="DIR", help="where report.html, report.md and report.json go")


def main(args: argparse.Namespace) -> int:
    out = make_report(args.validation, args.out, latencies=args.latency, engines=args.engines, reference=args.reference,
                      title=args.title, images=args.images)
    print(f"wrote {out / 'report.html'}, {out / 'report.md'} and {out / 'report.json'}")
    return 0
