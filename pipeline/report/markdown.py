"""report.md: the summary and the key tables of the report in Markdown (pictures and plots are in report.html)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .formats import fixed, ms, pct, precision_label, precision_text, ratio, sci, short, signed_points


def _cell(x: object) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def table(head: Sequence[str], rows: Sequence[Sequence[object]], text: Sequence[int] = (0,)) -> list[str]:
    """A Markdown table; the columns numbered in `text` are left-aligned, the others (numbers) right-aligned."""
    align = ["---" if i in text else "---:" for i in range(len(head))]
    out = ["| " + " | ".join(_cell(h) for h in head) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return [*out, ""]


def render(d: dict[str, Any]) -> str:
    h = d["headline"]
    t = h["text"]
    first = d["validations"][0]
    made = d["created"].replace("T", " ").replace("+00:00", " UTC")
    byline = f"_Made by `dvit report` on {made}; the pictures and plots are in report.html, every figure in report.json._"
    lines = [f"# {d['title']}", "", byline, "", "## Summary", ""]
    lines.append(f"- **Accuracy kept:** {t['accuracy_delta']}: top-1 {t['accuracy']} against {t['reference_accuracy']} "
                 f"({first['reference']['name']}), top-1 agreement {t['agreement']} ({h['label']}, stage chain, "
                 f"{first['dataset']['samples']} test images).")
    lt = h["latency"]
    if lt:
        lines.append(f"- **Latency, pruned / dense:** {t['latency_ratio']} measured against a FLOPs ratio of "
                     f"{t['flops_ratio']} (the limit) ({lt['backend_label']} {precision_text(lt['precision'])}, batch "
                     f"{lt['batch']}, {lt['mode']}: {ms(lt['pruned_ms'])} ms vs {ms(lt['dense_ms'])} ms, p50).")
    else:
        flops = f" (FLOPs ratio {t['flops_ratio']})" if "flops_ratio" in t else ""
        lines.append(f"- **Latency, pruned / dense:** {t['latency_ratio']}{flops}.")
    for nm in h["not_measured"]:
        lines.append(f"- {nm}.")
    th = h["thresholds"]
    failed = f"; failed: {', '.join(th['failed'])}" if th["failed"] else ""
    lines.append(f"- **Thresholds:** {t['thresholds']}{failed}.")
    lines.append(f"- **{h.get('tokens_label', 'Patch tokens per stage')}:** {t['tokens']}.")
    lines.append("")

    lines += ["## Accuracy and top-1 agreement", ""]
    rows = []
    for r in d["validations"]:
        rows.append([r["label"], r["backend"], r["dataset"]["samples"], pct(r["reference"]["accuracy"]), pct(r["chain"]["accuracy"]),
                     pct(r["fused"]["accuracy"]), signed_points(r["delta_points"]).replace(" points", ""),
                     f"{pct(r['chain']['agreement'])} / {pct(r['fused']['agreement'])}",
                     f"{sci(r['chain']['logits_max_abs'])} / {sci(r['fused']['logits_max_abs'])}",
                     ("pass" if r["requirements"]["passed"] else "FAIL") + f" ({str(r['requirements']['profile']).upper()})"])
    lines += table(["graphs", "backend", "images", "reference top-1 (%)", "chain top-1 (%)", "fused top-1 (%)",
                    "delta chain (points)", "agreement chain / fused", "logits max abs error", "thresholds"], rows, (0, 1, 9))

    lines += ["## Kept-token IoU per pruning point", ""]
    rows = []
    for r in d["validations"]:
        for i, k in enumerate(r["kept"]):
            rows.append([r["label"] if i == 0 else "", k["stage"], k["keep_count"], fixed(k["chain_iou_mean"]),
                         fixed(k["chain_iou_min"], 2), pct(k["chain_identical"], 1), fixed(k["fused_iou_mean"]),
                         pct(k["fused_identical"], 1)])
    lines += table(["graphs", "pruning point", "kept (k)", "chain IoU mean", "chain IoU min", "chain sets identical",
                    "fused IoU mean", "fused sets identical"], rows)

    rows = []
    for r in d["validations"]:
        for i, b in enumerate(r["boundaries"]):
            c, s = b.get("chained") or {}, b.get("isolated") or {}
            rows.append([r["label"] if i == 0 else "", b["stage"], f"`{b['tensor']}`", sci(c.get("max_abs")),
                         fixed(c.get("cosine_min"), 6), sci(s.get("max_abs")), fixed(s.get("cosine_min"), 6)])
    if rows:
        lines += ["## Per-stage token error (stage boundaries)", ""]
        lines += table(["graphs", "stage", "tensor", "chained max abs", "chained cosine min", "isolated max abs",
                        "isolated cosine min"], rows, (0, 2))

    lat = d["latency"]
    lines += ["## Latency", ""]
    if lat:
        rows = []
        for c in lat["comparisons"]:
            p, dn = c["pruned"] or {}, c["dense"] or {}
            rows.append([c["graphs_label"], c["backend_label"], precision_text(c["precision"]), c["mode"] or "-", c["batch"],
                         ms(p.get("p50_ms")) + (" (noisy)" if c["noisy"] else ""), ms(dn.get("p50_ms")),
                         ratio(c["measured_ratio"]), ratio(c["flops_ratio"])])
        for key in dict.fromkeys((u["backend_label"], u["reason"]) for u in lat["unavailable"]):
            rows.append(["", key[0], f"not measured: {key[1]}", "", "", "", "", "", ""])
        lines += table(["graphs", "backend", "precision", "mode", "batch", "pruned p50 (ms)", "dense p50 (ms)",
                        "pruned / dense", "FLOPs ratio (limit)"], rows, (0, 1, 2, 3))
        srows = []
        for c in lat["comparisons"]:
            if c["stages"]:
                label = f"{c['graphs_label']}: {c['backend_label']} {precision_text(c['precision'])}, batch {c['batch']}"
                srows.append([label, *[ms((s or {}).get("p50_ms")) for s in c["stages"]], ms((c["pruned"] or {}).get("p50_ms"))])
        if srows:
            n = max(len(r) for r in srows) - 2
            lines += ["### Per stage (stage chain, p50 ms)", ""]
            lines += table(["backend", *[f"stage {i}" for i in range(n)], "end to end"], srows)
    else:
        lines += ["No latency result given (`--latency`).", ""]

    sw = d["sweep"]
    if sw:
        lines += ["## Against keep ratio", ""]
        rows = []
        for label, pts in sw["accuracy"].items():
            rows += [[label, f"{x:g}", f"{y:.2f}"] for x, y in pts]
        lines += table(["graphs", "keep ratio", "chain top-1 (%)"], rows)
        lrows = [[label, f"{x:g}", ratio(y)] for label, pts in sw["latency_ratio"].items() for x, y in pts]
        lrows += [["FLOPs ratio (the limit)", f"{x:g}", ratio(y)] for x, y in sw["flops_ratio"]]
        if lrows:
            lines += table(["latency", "keep ratio", "pruned / dense"], lrows)

    if d["engines"]:
        lines += ["## Engines", ""]
        for g in d["engines"]:
            lines.append(f"`{g['dir']}`: {g.get('backend_label') or '?'} {g.get('version') or ''}, target {g.get('target') or '-'}, "
                         f"precision {precision_label(g['precision'])}, manifest `{short(g['sha256'])}`.")
            lines.append("")
            rows = []
            for en in g["entries"]:
                rep = en["layers"]
                mix = ", ".join(f"{k.upper()} {v}" for k, v in rep["precisions"].items()) if rep else f"not available: {en['problem']}"
                rows.append([en["name"], en["batch"], rep["layers"] if rep else "-", mix])
            lines += table(["engine", "batch", "layers", "layer precisions"], rows, (0, 3))

    lines += ["## Provenance", ""]
    rows = []
    for r in d["validations"]:
        g = r["graph_set"]
        ck = (g.get("checkpoint") or {}).get("sha256")
        rows.append([r["label"], f"`{g['dir']}`", g["kind"], "-" if g["keep_ratio"] is None else f"{g['keep_ratio']:g}",
                     f"`{short(g['sha256'])}`", f"`{short(ck)}`",
                     "unchanged" if g["manifest_matches"] else "CHANGED" if g["manifest_here"] else "not here"])
    lines += table(["graphs", "directory", "kind", "keep ratio", "manifest sha256", "checkpoint sha256",
                    "manifest since validation"], rows, range(7))
    lines += table(["input", "file", "sha256"], [[s["role"], f"`{s['path']}`", f"`{s['sha256']}`"] for s in d["inputs"]],
                   range(3))
    return "\n".join(lines)
