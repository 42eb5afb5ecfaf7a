"""The accuracy table's rows: one per validation result, with what its graph set's manifest says."""
from __future__ import annotations

from typing import Any

from ..results.validation import ValidationResult
from .formats import precision_label, providers_name
from .graph_sets import Manifests, graph_set_info


def validation_rows(validations: list[ValidationResult], manifests: Manifests) -> list[dict[str, Any]]:
    rows = []
    for i, v in enumerate(validations):
        gs = graph_set_info(v, manifests)
        ref = v.reference
        chain, fused = v.chain, v.fused
        iso = chain.get("kept_isolated") or [None] * len(chain["kept"])
        kept = []
        for c, f, s in zip(chain["kept"], fused["kept"], iso):
            kept.append({"stage": c["stage"], "keep_count": c["keep_count"], "chain_iou_mean": c.get("iou_mean"),
                         "chain_iou_min": c.get("iou_min"), "chain_identical": c.get("identical"),
                         "fused_iou_mean": f.get("iou_mean"), "fused_identical": f.get("identical"),
                         "isolated_iou_mean": (s or {}).get("iou_mean"), "isolated_identical": (s or {}).get("identical")})
        req = v.requirements
        kr = gs["keep_ratio"]
        label = f"{precision_label(gs['precision'])} {gs['kind'] or 'graphs'}" + (f", keep {kr:g}" if kr is not None else "")
        ref_acc = ref.get("accuracy")
        rows.append({
            "id": f"v{i + 1}", "file": str(v.path), "label": label, "graph_set": gs,
            "backend": providers_name(v.providers) + (" + plugin reference op" if gs["kind"] == "plugin" else ""),
            "reference": {k: ref.get(k) for k in ("kind", "name", "accuracy", "matches_manifest")},
            "dataset": v.data.get("dataset"), "batch_size": v.data.get("batch_size"),
            "chain": {"accuracy": chain["accuracy"], "agreement": chain["agreement"],
                      "logits_max_abs": (chain.get("logits") or {}).get("max_abs")},
            "fused": {"accuracy": fused["accuracy"], "agreement": fused["agreement"],
                      "logits_max_abs": (fused.get("logits") or {}).get("max_abs")},
            "delta_points": None if ref_acc is None else 100 * (chain["accuracy"] - ref_acc),
            "fused_delta_points": None if ref_acc is None else 100 * (fused["accuracy"] - ref_acc),
            "chain_vs_fused": v.data["chain_vs_fused"], "batch_consistency": v.data.get("batch_consistency"),
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
