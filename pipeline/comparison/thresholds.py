"""Pass/fail thresholds per precision profile (what `--require` enforces).

    fp32: agreement 100%, logits max abs error < 1e-4, kept sets identical at every pruning point, B>1 vs B=1
          logits max abs diff < 1e-4;
    fp16: agreement >= 99.5%, accuracy within 0.3 points of the reference, mean kept IoU >= 0.98;
    int8: accuracy within 1.0 point of the reference.
"""
from __future__ import annotations

from typing import Any

PROFILES = ("fp32", "fp16", "int8")
FP32_LOGITS_TOL = 1e-4


def profile_for(precisions: list[str]) -> str:
    if "int8" in precisions:
        return "int8"
    if "fp16" in precisions:
        return "fp16"
    return "fp32"


def requirement_checks(result: dict[str, Any], profile: str) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []

    def add(name: str, value: float | None, op: str, threshold: float) -> None:
        ok = value is not None and {
            "<": value < threshold, "<=": value <= threshold, ">=": value >= threshold, "==": value == threshold
        }[op]
        checks.append({"name": name, "value": value, "op": op, "threshold": threshold, "passed": bool(ok)})

    ref = result["reference"]["accuracy"]
    for kind in ("chain", "fused"):
        r = result[kind]
        if profile == "fp32":
            add(f"{kind} agreement", r["agreement"], "==", 1.0)
            add(f"{kind} logits max abs error", r["logits"]["max_abs"], "<", FP32_LOGITS_TOL)
            for k in r["kept"]:
                add(f"{kind} kept sets identical (stage {k['stage']})", k["identical"], "==", 1.0)
        elif profile == "fp16":
            add(f"{kind} agreement", r["agreement"], ">=", 0.995)
            add(f"{kind} accuracy drop vs reference (points)", round(100 * (ref - r["accuracy"]), 6), "<=", 0.3)
            for k in r["kept"]:
                add(f"{kind} mean kept IoU (stage {k['stage']})", k["iou_mean"], ">=", 0.98)
        else:
            add(f"{kind} accuracy drop vs reference (points)", round(100 * (ref - r["accuracy"]), 6), "<=", 1.0)
    bc = result.get("batch_consistency")
    if profile == "fp32" and bc:
        for kind in ("chain", "fused"):
            add(f"{kind} B={bc['batch_sizes'][0]} vs B=1 logits max abs diff", bc[kind]["logits_max_abs"], "<", FP32_LOGITS_TOL)
    return checks


def requirements(result: dict[str, Any], profile: str, enforced: bool) -> dict[str, Any]:
    checks = requirement_checks(result, profile)
    return {"profile": profile, "enforced": enforced, "passed": all(c["passed"] for c in checks), "checks": checks}
