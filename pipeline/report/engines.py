"""The engines section: provenance of each engine graph set and the layer precisions from the TensorRT
engine-inspector reports beside its engines."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..graphset import GraphSet
from .formats import backend_name

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
    `backend` (a name, or backend.tensorrt.describe's {"backend", "version"}), `build` (backend.tensorrt.config_json's
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


def engine_section(engines: list[GraphSet]) -> list[dict[str, Any]]:
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
