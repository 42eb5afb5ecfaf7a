"""The latency table: each pruned run beside the dense run latency paired it with, the ratio latency computed,
and the FLOPs ratio of its graph set; runs that could not happen, with their reason.

The pairs come from pipeline.results.latency (the rule the latency stage wrote its ratios by), and the measured
ratio is the one the latency stage wrote; the report computes one only for a file that has none for a pair
(hand-written), by the same rule.
"""
from __future__ import annotations

from typing import Any

from ..results.latency import LatencyResult, Pair
from .formats import backend_name, mode_label
from .graph_sets import Manifests


def _stats(s: dict[str, Any] | None) -> dict[str, Any] | None:
    if not isinstance(s, dict):
        return None
    keys = ("iterations", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "cv", "noisy")
    return {k: s.get(k) for k in keys}


def flops_summary(f: Any) -> dict[str, Any] | None:
    if not isinstance(f, dict):
        return None
    out = {k: f.get(k) for k in ("pruned", "dense", "ratio")}
    if out["ratio"] is None and out["pruned"] and out["dense"]:
        out["ratio"] = float(out["pruned"]) / float(out["dense"])
    return out


def latency_section(latencies: list[LatencyResult], manifests: Manifests) -> dict[str, Any] | None:
    if not latencies:
        return None
    comparisons: list[dict[str, Any]] = []
    unavailable: list[dict[str, Any]] = []
    files = []
    for fi, lat in enumerate(latencies):
        top = flops_summary(lat.flops)
        per_set = lat.graph_sets
        files.append({"file": str(lat.path), "machine": lat.machine, "settings": lat.settings,
                      "flops": top or {}, "graph_sets": [{"graphs": g, "flops": flops_summary(x.get("flops"))}
                                                         for g, x in per_set.items()]})
        for pair in lat.pairs():
            written = lat.written_ratio(pair.pruned) if pair.pruned is not None else None
            measured = pair.ratio("p50_ms") if written is None else written.get("latency_ratio_p50")
            comparisons.append(comparison(fi, pair, measured, top, per_set, manifests))
        for u in lat.unavailable:
            reason = u.get("reason", u.get("unavailable"))
            unavailable.append({"file_index": fi, "backend": u.get("backend"), "backend_label": backend_name(u.get("backend", "?")),
                                "reason": str(reason or "no reason given"), "graphs": u.get("graphs"), "batch": u.get("batch")})
    return {"files": files, "comparisons": comparisons, "unavailable": unavailable}


def comparison(fi: int, pair: Pair, measured: float | None, top: dict[str, Any] | None,
               per_set: dict[str, dict[str, Any]], manifests: Manifests) -> dict[str, Any]:
    """One row: a pruned run (or a dense run no pruned run was paired with) and its partner."""
    r, d = pair.pruned, pair.dense
    base = r or d or {}
    pruned, dense = _stats((r or {}).get("end_to_end")), _stats((d or {}).get("end_to_end"))
    stages = (r or {}).get("stages")
    gs = per_set.get(str(base.get("graphs"))) or {}
    flops = flops_summary(gs.get("flops")) or top or {}
    kr = manifests.keep_ratio(base.get("graphs"))
    if kr is None and isinstance(gs.get("model_config"), dict) and gs["model_config"].get("keep_ratio") is not None:
        kr = float(gs["model_config"]["keep_ratio"])
    return {
        "file_index": fi, "backend": base.get("backend"), "backend_label": backend_name(base.get("backend", "?")),
        "precision": base.get("precision"), "batch": base.get("batch"), "mode": mode_label(base),
        "io": base.get("io"), "cuda_graph": base.get("cuda_graph"),
        "graphs": base.get("graphs"), "kind": base.get("kind"), "keep_ratio": kr,
        "graphs_label": manifests.label(base.get("graphs"), base.get("kind"), kr),
        "pruned": pruned, "dense": dense, "dense_mode": (d or {}).get("mode"),
        "stages": [_stats(s) for s in stages] if isinstance(stages, list) else None,
        "gpu_pruned": _stats((r or {}).get("gpu")), "gpu_dense": _stats((d or {}).get("gpu")),
        "throughput_pruned": (r or {}).get("throughput_ips"), "throughput_dense": (d or {}).get("throughput_ips"),
        "measured_ratio": measured, "flops_ratio": flops.get("ratio"),
        "noisy": bool((pruned or {}).get("noisy") or (dense or {}).get("noisy")),
    }
