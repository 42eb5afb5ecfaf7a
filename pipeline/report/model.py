"""The page's model: report.json's content, made from the typed inputs (pipeline.report.inputs) and nothing else.

The headline, the accuracy rows, the latency comparisons, the engines, the pruned-token pictures and the
keep-ratio sweep, each figure formatted once for the page and the Markdown to show alike.
"""
from __future__ import annotations

import datetime
import platform
from typing import Any

from ..config import FAMILY_NAMES, config_from_dict
from ..errors import ConfigError, DvitError
from ..results.reference import Recording
from .engines import engine_section
from .formats import pct, precision_label, precision_text, ratio, short, signed_points
from .graph_sets import Manifests
from .inputs import Inputs
from .latency_table import latency_section
from .token_masks import MaskedImage, pictures
from .validation_rows import validation_rows

FORMAT = "dvit-edge/report/v1"
DEFAULT_IMAGES = 6


# ---------------------------------------------------------------- the recording and the pruned-token picture
def check_reference(rec: Recording, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The validated graph set the recording belongs to (same model config and checkpoint), refused when none."""
    cfg = rec.model_config or {}
    sha = rec.checkpoint_sha256
    rec_counts = rec.keep_counts
    for r in rows:
        gs = r["graph_set"]
        ck = (gs.get("checkpoint") or {}).get("sha256")
        if (gs["config"] is None or gs["config"] == cfg) and (ck is None or ck == sha) and gs["keep_counts"] == rec_counts:
            return r
    described = "; ".join(f"{r['graph_set']['dir']} (checkpoint {short((r['graph_set'].get('checkpoint') or {}).get('sha256'))}, "
                          f"keep counts {r['graph_set']['keep_counts']})" for r in rows)
    raise DvitError(
        f"{rec.path.name} was recorded from another model (checkpoint {short(sha)}, keep counts {rec_counts}) than the "
        f"validated graphs [{described}]: record one with 'dvit reference --graphs DIR --out REF.npz'"
    )


def token_pictures(rec: Recording, count: int) -> tuple[dict[str, Any], list[MaskedImage]]:
    cfg = config_from_dict(rec.model_config or {})
    if tuple(rec.data.images.shape[1:]) != (cfg.in_chans, cfg.img_size, cfg.img_size):
        raise DvitError(f"{rec.path.name} holds images of shape {tuple(rec.data.images.shape[1:])}, not the model's "
                        f"{(cfg.in_chans, cfg.img_size, cfg.img_size)}: re-run 'dvit reference'")
    pics = pictures(rec.data.images, rec.data.labels, rec.outputs, cfg, count)
    names = rec.data.classes if len(rec.data.classes) == cfg.num_classes else None
    info = {"file": str(rec.path), "npz_sha256": rec.npz_sha256, "checkpoint_sha256": rec.checkpoint_sha256,
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
    # what the tokens figure counts (a caption, not a figure: not in h["text"], whose values the page keys)
    h["tokens_label"] = TOKENS_LABEL.get(str((first["graph_set"].get("config") or {}).get("family")),
                                         "Patch tokens per stage")
    flops = lt["flops_ratio"] if lt else next((f["flops"]["ratio"] for f in (lat or {}).get("files", [])
                                                if f["flops"] and f["flops"].get("ratio") is not None), None)
    if flops is not None:
        h["text"]["flops_ratio"] = ratio(flops)
    return h


# The paper's names of each family's pruned model, and what the pruned path counts.
MODEL_NAMES = {f: f"DynamicViT-{n}" for f, n in FAMILY_NAMES.items() if f in ("deit", "lvvit")}
MODEL_NAMES.update(convnext="DynamicCNN (ConvNeXt)", swin="DynamicSwin")
TOKENS_LABEL = {"convnext": "Positions on the slow path per location", "swin": "Positions on the slow path per location"}


def _tokens_path(row: dict[str, Any]) -> list[int]:
    cfg = row["graph_set"].get("config")
    counts = list(row["graph_set"]["keep_counts"])
    if cfg:
        try:
            return [config_from_dict(cfg).num_patches, *counts]
        except (ConfigError, TypeError):
            pass
    return counts


# ---------------------------------------------------------------- the whole report
def machine_here() -> dict[str, Any]:
    return {"hostname": platform.node(), "system": f"{platform.system()} {platform.release()}",
            "machine": platform.machine(), "python": platform.python_version()}


def build(inp: Inputs, title: str | None = None, images: int = DEFAULT_IMAGES) -> tuple[dict[str, Any], list[MaskedImage]]:
    """report.json's content, and the pictures (PNG bytes) for the page. The graph-set manifests the inputs
    name are read once for this render."""
    manifests = Manifests()
    rows = validation_rows(inp.validations, manifests)
    lat = latency_section(inp.latencies, manifests)
    pics: list[MaskedImage] = []
    masks = None
    if inp.reference is not None:
        owner = check_reference(inp.reference, rows)
        masks, pics = token_pictures(inp.reference, images)
        masks["graphs"] = owner["label"]
    first = rows[0]["graph_set"]
    model = first.get("model") or (first.get("config") or {}).get("name")
    family = str((first.get("config") or {}).get("family", "deit"))
    data: dict[str, Any] = {
        "format": FORMAT,
        "title": title or f"{MODEL_NAMES.get(family, 'DynamicViT')} deployment report{f': {model}' if model else ''}",
        "created": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        "made_on": machine_here(),
        "inputs": [{"role": s.role, "path": str(s.path), "sha256": s.sha256} for s in inp.sources],
        "headline": headline(rows, lat),
        "validations": rows,
        "latency": lat,
        "engines": engine_section(inp.engines),
        "token_masks": masks,
        "sweep": sweep(rows, lat),
        "sources": {"validations": [v.data for v in inp.validations], "latency": [x.data for x in inp.latencies],
                    "engine_manifests": [{k: v for k, v in gs.manifest.items() if not k.startswith("_")} for gs in inp.engines],
                    "reference": None if inp.reference is None else inp.reference.meta},
    }
    return data, pics
