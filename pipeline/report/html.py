"""report.html: one self-contained page (inline CSS, inline SVG plots, PNG data URIs; no script, no web font, no
link outside the page), made from report.json's content (see pipeline.report.model.build)."""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from . import svg as S
from .formats import fixed, ms, pct, precision_label, precision_text, ratio, sci, short, signed_points
from .token_masks import data_uri


class Raw(str):
    """HTML that is already safe (escaped or made here)."""



def shown_path(path: str | None) -> str | None:
    """A manifest's absolute path shown relative to the working directory when it lies below it: the page then
    names the run's files, not the machine it was made on."""
    if not path or not os.path.isabs(path):
        return path
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel

def e(x: object) -> str:
    return x if isinstance(x, Raw) else escape(str(x), quote=True)


def tag(name: str, body: object = "", **attrs: object) -> Raw:
    a = "".join(f' {k.rstrip("_").replace("_", "-")}="{escape(str(v), quote=True)}"' for k, v in attrs.items() if v is not None)
    return Raw(f"<{name}{a}>{e(body) if not isinstance(body, Raw) else body}</{name}>")


def join(parts: Iterable[object], sep: str = "") -> Raw:
    return Raw(sep.join(e(p) for p in parts))


def key(name: str, text: str) -> Raw:
    """A headline figure, marked so that tests can find it and compare it with report.json and report.md."""
    return tag("span", text, data_key=f"headline.{name}", class_="fig")


def badge(ok: bool | None, yes: str = "pass", no: str = "fail") -> Raw:
    if ok is None:
        return tag("span", "not checked", class_="badge na")
    return tag("span", f"\u2713 {yes}" if ok else f"\u2717 {no}", class_="badge " + ("pass" if ok else "fail"))


def unit(label: str, u: str) -> Raw:
    return Raw(f"{e(label)} <span class=\"unit\">({e(u)})</span>")


def table(head: Sequence[object] | Raw, rows: Iterable[Sequence[object] | Raw], num_from: int = 1,
          caption: str | None = None, cls: str | None = None, text: Sequence[int] = ()) -> Raw:
    """A table whose columns from `num_from` on hold numbers (right-aligned), but for those numbered in `text`.
    `head` is a list of column titles or ready <tr> rows (Raw); a Raw row is written as it is (group headings)."""
    def num(i: int) -> str | None:
        return "num" if i >= num_from and i not in text else None

    if isinstance(head, Raw):
        thead = head
    else:
        thead = tag("tr", join(tag("th", c, scope="col", class_=num(i)) for i, c in enumerate(head)))
    body = []
    for r in rows:
        if isinstance(r, Raw):
            body.append(r)
            continue
        cells = [tag("th", r[0], scope="row", class_=num(0))]
        cells += [tag("td", c, class_=num(i + 1)) for i, c in enumerate(r[1:])]
        body.append(tag("tr", join(cells)))
    cap = tag("caption", caption) if caption else Raw("")
    return tag("div", tag("table", join([cap, tag("thead", thead), tag("tbody", join(body))]), class_=cls), class_="scroll")


def group_row(label: object, ncols: int, note: object = "") -> Raw:
    """A heading row inside a table body, spanning every column."""
    extra = Raw(f' <span class="note">{e(note)}</span>') if note else Raw("")
    return Raw(f'<tr class="group"><th scope="rowgroup" colspan="{ncols}">{e(label)}{extra}</th></tr>')


def na_row(label: object, ncols: int, text: str) -> Raw:
    """A row that says why there are no numbers, in place of them."""
    return Raw(f'<tr class="na"><th scope="row">{e(label)}</th><td colspan="{ncols - 1}">{e(text)}</td></tr>')


def head_rows(top: Sequence[tuple[object, int, bool]], sub: Sequence[tuple[object, bool]]) -> Raw:
    """Two header rows: `top` cells (title, colspan, numeric), a colspan-1 cell spanning both rows, and under the
    wider ones their `sub` cells (title, numeric), left to right."""
    first, second = [], []
    for title, span, numeric in top:
        if span > 1:
            first.append(tag("th", title, scope="colgroup", colspan=span, class_="span"))
        else:
            first.append(tag("th", title, scope="col", rowspan=2, class_="num" if numeric else None))
    for title, numeric in sub:
        second.append(tag("th", title, scope="col", class_="num" if numeric else None))
    return join([tag("tr", join(first)), tag("tr", join(second))])


CSS = """
:root { --ink: #1f2328; --muted: #57606a; --line: #d8dee4; --soft: #f6f8fa; --accent: #0b5cad;
        --pass: #116329; --pass-bg: #dafbe1; --fail: #a40e26; --fail-bg: #ffebe9; --warn: #7d4e00; --warn-bg: #fff8c5; }
* { box-sizing: border-box; }
html { font-size: 16px; -webkit-text-size-adjust: 100%; }
body { margin: 0; color: var(--ink); background: #fff; line-height: 1.5;
       font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Liberation Sans", "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 2.5rem 1.75rem 4rem; }
header .kicker { margin: 0; color: var(--muted); font-size: .8rem; letter-spacing: .08em; text-transform: uppercase; }
h1 { font-size: 2rem; line-height: 1.2; margin: .3rem 0 .4rem; font-weight: 700; }
h2 { font-size: 1.35rem; margin: 0 0 .6rem; padding-top: .4rem; }
h3 { font-size: 1.05rem; margin: 1.4rem 0 .5rem; }
p { margin: .4rem 0 .8rem; max-width: 78ch; }
.meta { color: var(--muted); margin: 0; }
a { color: var(--accent); }
code, .mono { font-family: ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", "Liberation Mono", Menlo, Consolas, monospace;
              font-size: .86em; }
section { margin-top: 2.6rem; }
.note { color: var(--muted); font-size: .92rem; }
/* summary */
.summary { display: grid; grid-template-columns: repeat(auto-fit, minmax(230px, 1fr)); gap: 1rem; margin-top: 1.6rem; }
.card { border: 1px solid var(--line); border-radius: 10px; padding: 1rem 1.1rem .9rem; background: var(--soft); }
.card h2 { font-size: .78rem; letter-spacing: .06em; text-transform: uppercase; color: var(--muted); margin: 0 0 .35rem;
           padding: 0; font-weight: 600; }
.card .big { font-size: 1.5rem; font-weight: 700; line-height: 1.25; margin: 0 0 .4rem;
             font-variant-numeric: tabular-nums; }
.card p { margin: .2rem 0; font-size: .92rem; }
.card.pass { background: var(--pass-bg); border-color: #aceebb; }
.card.pass .big { color: var(--pass); }
.card.fail { background: var(--fail-bg); border-color: #ffcecb; }
.card.fail .big { color: var(--fail); }
.fig { font-variant-numeric: tabular-nums; }
nav.toc { margin-top: 1.6rem; font-size: .92rem; color: var(--muted); }
nav.toc a { margin-right: 1.1rem; text-decoration: none; }
nav.toc a:hover { text-decoration: underline; }
/* tables */
.scroll { overflow-x: auto; margin: .6rem 0 1rem; }
table { border-collapse: collapse; font-size: .9rem; font-variant-numeric: tabular-nums; min-width: 50%; }
caption { text-align: left; color: var(--muted); font-size: .86rem; padding-bottom: .35rem; caption-side: top; }
th, td { padding: .42rem .7rem; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
thead th { border-bottom: 2px solid #afb8c1; font-weight: 600; white-space: nowrap; background: #fff; }
tbody th { font-weight: 500; }
.num { text-align: right; white-space: nowrap; }
.unit { color: var(--muted); font-weight: 400; }
tr.na td { color: var(--warn); background: var(--warn-bg); font-style: italic; }
tr.group th { background: var(--soft); font-weight: 600; padding-top: .5rem; }
tr.group .note { font-weight: 400; margin-left: .6rem; }
tr.total th, tr.total td { border-top: 1px solid #afb8c1; font-weight: 600; }
tr.total td.note { font-weight: 400; }
thead th.span { text-align: center; border-bottom: 1px solid var(--line); }
table.compact th, table.compact td { padding: .3rem .65rem; }
td .badge, th .badge { font-size: .75rem; }
table.rowlabels tbody th[scope=row] { white-space: nowrap; }
.badge { display: inline-block; padding: .05rem .5rem; border-radius: 999px; font-size: .8rem; font-weight: 600;
         white-space: nowrap; }
.badge.pass { color: var(--pass); background: var(--pass-bg); }
.badge.fail { color: var(--fail); background: var(--fail-bg); }
.badge.na { color: var(--warn); background: var(--warn-bg); }
.warnline { color: var(--warn); background: var(--warn-bg); border-radius: 6px; padding: .45rem .7rem; display: inline-block;
            margin: .2rem 0; }
.bad { color: var(--fail); font-weight: 600; }
/* figures */
figure { margin: 1rem 0 1.4rem; }
figcaption { color: var(--muted); font-size: .88rem; margin-top: .4rem; max-width: 90ch; }
svg.plot { max-width: 100%; height: auto; font-family: inherit; display: block; }
.plots { display: flex; flex-wrap: wrap; gap: 1.5rem 2.5rem; }
.tokens { display: grid; gap: .9rem 1.2rem; align-items: start; }
.tokens .colhead { font-size: .8rem; color: var(--muted); font-weight: 600; }
.tokens img { display: block; width: 128px; height: auto; image-rendering: pixelated; border-radius: 3px;
              border: 1px solid var(--line); }
.tokens .rowhead { font-size: .85rem; align-self: center; }
.tokens .rowhead span { display: block; }
.tokens .rowhead .cls { font-weight: 600; }
.tokens .rowhead .pred { color: var(--muted); }
.hatch { display: inline-block; width: 1.1em; height: 1.1em; vertical-align: -.2em; margin-right: .35em;
         border: 1px solid #98a8bc; background: repeating-linear-gradient(45deg, #b4c2d3 0 2px, #e9eef4 2px 6px); }
.swatch { display: inline-block; width: .8em; height: .8em; border-radius: 2px; vertical-align: -.05em;
          margin: 0 .3em 0 .9em; }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1.2rem; margin: .4rem 0 1rem; font-size: .92rem; }
dl.kv dt { color: var(--muted); }
dl.kv dd { margin: 0; overflow-wrap: anywhere; }
dl.kv.wide { grid-template-columns: max-content minmax(0, 1fr) max-content minmax(0, 1fr); }
details { margin: .4rem 0; border: 1px solid var(--line); border-radius: 8px; padding: .5rem .9rem; }
details summary { cursor: pointer; font-weight: 500; }
footer { margin-top: 3rem; padding-top: 1rem; border-top: 1px solid var(--line); color: var(--muted); font-size: .85rem; }
@media print { main { padding: 0; max-width: none; } section { break-inside: avoid-page; } nav.toc { display: none; } }
"""


# ---------------------------------------------------------------- sections
def _summary(d: dict[str, Any]) -> Raw:
    h = d["headline"]
    t = h["text"]
    first = d["validations"][0]
    ref = first["reference"]
    acc = tag("div", join([
        tag("h2", "Accuracy kept"),
        tag("p", key("accuracy_delta", t["accuracy_delta"]), class_="big"),
        tag("p", join(["top-1 ", key("accuracy", t["accuracy"]), " against ", key("reference_accuracy", t["reference_accuracy"]),
                       f" ({ref['name']})"])),
        tag("p", join(["top-1 agreement ", key("agreement", t["agreement"])])),
        tag("p", f"{h['label']}, stage chain, {first['dataset']['samples']} test images", class_="note"),
    ]), class_="card")
    lt = h["latency"]
    lat_parts: list[object] = [tag("h2", "Latency, pruned \u00f7 dense"),
                               tag("p", key("latency_ratio", t["latency_ratio"]), class_="big")]
    if lt:
        lat_parts += [
            tag("p", join(["FLOPs ratio ", key("flops_ratio", t["flops_ratio"]), " (the limit)"])),
            tag("p", f"{lt['backend_label']} {precision_text(lt['precision'])}, batch {lt['batch']}, {lt['mode']}: "
                     f"{ms(lt['pruned_ms'])} vs {ms(lt['dense_ms'])} ms (p50)", class_="note"),
        ]
    elif "flops_ratio" in t:
        lat_parts.append(tag("p", join(["FLOPs ratio ", key("flops_ratio", t["flops_ratio"]), " (the limit)"])))
    for line in h["not_measured"]:
        lat_parts.append(tag("p", line, class_="warnline"))
    if not d["latency"]:
        lat_parts.append(tag("p", "no latency result given (--latency)", class_="note"))
    th = h["thresholds"]
    ok = th["all_passed"]
    profiles = sorted({str(r["requirements"]["profile"]).upper() for r in d["validations"]})
    thr_parts: list[object] = [tag("h2", "Thresholds"),
                               tag("p", join(["\u2713 " if ok else "\u2717 ", key("thresholds", t["thresholds"])]), class_="big"),
                               tag("p", f"validations meeting the thresholds of their precision "
                                        f"({', '.join(profiles)} profile{'s' if len(profiles) > 1 else ''})")]
    for label in th["failed"]:
        thr_parts.append(tag("p", f"\u2717 {label}", class_="bad"))
    thr = tag("div", join(thr_parts), class_="card " + ("pass" if ok else "fail"))
    tok = tag("div", join([
        tag("h2", h.get("tokens_label", "Patch tokens per stage")),
        tag("p", key("tokens", t["tokens"]), class_="big"),
        tag("p", "entering stage 0, then kept at each pruning point"),
    ]), class_="card")
    return tag("section", join([acc, tag("div", join(lat_parts), class_="card"), thr, tok]), class_="summary",
               aria_label="Summary")


def _label_cell(r: dict[str, Any]) -> Raw:
    return Raw(f"{e(r['label'])}<br><span class=\"note mono\">{e(r['graph_set']['dir'] or '')}</span>")


def _accuracy(d: dict[str, Any]) -> Raw:
    head = head_rows(
        [("graphs", 1, False), ("backend", 1, False), ("images", 1, True), ("top-1 (%)", 3, True),
         (unit("\u0394 chain", "points"), 1, True), ("agreement (%)", 2, True), ("thresholds", 1, False)],
        [("reference", True), ("chain", True), ("fused", True), ("chain", True), ("fused", True)])
    rows = []
    for r in d["validations"]:
        req = r["requirements"]
        rows.append([
            _label_cell(r), r["backend"].replace(" ", "\u00a0"), str(r["dataset"]["samples"]), pct(r["reference"]["accuracy"])[:-1],
            pct(r["chain"]["accuracy"])[:-1], pct(r["fused"]["accuracy"])[:-1],
            signed_points(r["delta_points"]).replace(" points", ""), pct(r["chain"]["agreement"])[:-1],
            pct(r["fused"]["agreement"])[:-1],
            Raw(f"{badge(req['passed'])}<br><span class=\"note\">{e(str(req['profile']).upper())}"
                f"{'' if req['enforced'] else ', reported'}</span>"),
        ])
    refs = sorted({r["reference"]["name"] for r in d["validations"]})
    intro = tag("p", "Top-1 on the test images of each validation, for the stage chain (one graph per stage, each fed the "
                     "previous stage's tokens) and the fused graph, against the reference "
                     f"({'; '.join(refs)}). Agreement: the share of images whose top-1 class is the reference's.")
    crow = []
    for r in d["validations"]:
        cf, bc = r["chain_vs_fused"], r.get("batch_consistency")
        bct = "-" if not bc else (f"B={bc['batch_sizes'][0]} vs 1: {sci(max(bc['chain']['logits_max_abs'], bc['fused']['logits_max_abs']))}, "
                                  f"{pct(min(bc['chain']['agreement'], bc['fused']['agreement']))}")
        crow.append([r["label"], sci(r["chain"]["logits_max_abs"]), sci(r["fused"]["logits_max_abs"]),
                     sci((r.get("isolated_logits") or {}).get("max_abs")), sci(cf.get("logits_max_abs")),
                     pct(cf.get("agreement")), bct])
    cons = table(["graphs", "chain", "fused", "last stage, isolated", "chain vs fused", "chain vs fused agreement",
                  "batch consistency"], crow, num_from=1,
                 caption="Logits: max abs error against the reference, and between the candidate's own forms")
    return _section("accuracy", "Accuracy and top-1 agreement", join([intro, table(head, rows, num_from=2), cons]))


def _tokens(d: dict[str, Any], pictures: list[Any]) -> Raw:
    parts: list[object] = []
    tm = d["token_masks"]
    if tm and pictures:
        n_stage = len(tm["keep_counts"])
        cells: list[object] = [tag("div", "")]
        cells.append(tag("div", f"input, {tm['num_patches']} patches", class_="colhead"))
        for i, k in enumerate(tm["keep_counts"]):
            cells.append(tag("div", f"pruning point {i + 1}: {k} kept", class_="colhead"))
        for info, pic in zip(tm["images"], pictures):
            right = info["predicted"] is None or info["predicted"] == info["label"]
            pred = "" if info["predicted"] is None else (
                f"predicted {info['predicted_name']} " + ("\u2713" if right else "\u2717"))
            cells.append(tag("div", join([tag("span", info["label_name"], class_="cls"),
                                          tag("span", pred, class_="pred"),
                                          tag("span", f"test image {tm['dataset']['first'] + info['index']}", class_="note")]),
                             class_="rowhead"))
            alts = ["input"] + [f"after pruning point {i + 1}" for i in range(n_stage)]
            for png, alt in zip(pic.pngs, alts):
                cells.append(tag("div", Raw(f'<img src="{data_uri(png)}" alt="{e(info["label_name"])}, {e(alt)}">')))
        grid = tag("div", join(cells), class_="tokens", style=f"grid-template-columns: 9.5rem repeat({n_stage + 1}, 130px)")
        cap = tag("figcaption", f"What the reference ({tm['model']}, keep ratio {tm['keep_ratio']:g}) keeps on the first "
                                f"{len(pictures)} recorded test images: hatched patches were dropped at or before that "
                                f"pruning point ({tm['grid']}\u00d7{tm['grid']} grid of {tm['patch_size']}-pixel patches; "
                                f"the validated graphs: {tm['graphs']}). The predicted class is the reference's.")
        key_line = tag("p", join([Raw('<span class="hatch" aria-hidden="true"></span>'),
                                  "a pruned patch token (dropped at this pruning point or before)"]), class_="note")
        parts.append(tag("figure", join([key_line, grid, cap])))
    else:
        parts.append(tag("p", "No pictures: pass --reference REF.npz (a recording made by 'dvit reference') to see the "
                              "pruned tokens.", class_="note"))
    head = head_rows(
        [("pruning point", 1, False), ("kept", 1, True), ("stage chain", 3, True), ("fused graph", 2, True),
         ("isolated IoU mean", 1, True)],
        [("IoU mean", True), ("IoU min", True), ("sets identical", True), ("IoU mean", True), ("sets identical", True)])
    rows: list[Any] = []
    for r in d["validations"]:
        rows.append(group_row(r["label"], 8))
        for k in r["kept"]:
            rows.append([str(k["stage"]), str(k["keep_count"]), fixed(k["chain_iou_mean"]), fixed(k["chain_iou_min"], 2),
                         pct(k["chain_identical"], 1), fixed(k["fused_iou_mean"]), pct(k["fused_identical"], 1),
                         fixed(k["isolated_iou_mean"])])
    parts.append(tag("h3", "Kept-token IoU per pruning point"))
    parts.append(tag("p", "Per image, |A \u2229 B| / |A \u222a B| of the patch sets kept by the graphs (A) and by the reference "
                          "(B), composed through the stages into patch-grid positions; \u201csets identical\u201d is the "
                          "share of images with IoU 1. Isolated: each stage fed the reference's tokens, which separates a "
                          "stage's own drift from what it inherits.", class_="note"))
    parts.append(table(head, rows, num_from=1, cls="compact"))
    return _section("tokens", "Pruned tokens", join(parts))


def _boundaries(d: dict[str, Any]) -> Raw:
    head = head_rows([("stage", 1, False), ("tensor", 1, False), ("chained", 3, True), ("isolated", 3, True)],
                     [("max abs", True), ("mean abs", True), ("cosine min", True)] * 2)
    rows: list[Any] = []
    for r in d["validations"]:
        if not r["boundaries"]:
            rows.append(na_row(r["label"], 8, "not measured: the reference holds no stage-boundary tokens (record it with "
                                              "tokens)"))
            continue
        rows.append(group_row(r["label"], 8))
        for b in r["boundaries"]:
            c, s = b.get("chained") or {}, b.get("isolated") or {}
            rows.append([str(b["stage"]), Raw(f"<code>{e(b['tensor'])}</code>"),
                         sci(c.get("max_abs")), sci(c.get("mean_abs")), fixed(c.get("cosine_min"), 6),
                         sci(s.get("max_abs")), sci(s.get("mean_abs")), fixed(s.get("cosine_min"), 6)])
    intro = tag("p", "The tokens entering each stage graph against the reference's, rows in patch-grid order. Chained: "
                     "the graphs all the way; isolated: the stage before fed the reference's tokens.", class_="note")
    return _section("boundaries", "Per-stage token error", join([intro, table(head, rows, num_from=2, cls="compact")]))


def _latency(d: dict[str, Any]) -> Raw:
    lat = d["latency"]
    if not lat:
        return _section("latency", "Latency", tag("p", "No latency result given: pass --latency L.json.", class_="note"))
    parts: list[object] = [tag("p", "Median (p50) time per batch, the pruned DynamicViT against its dense teacher on the "
                                    "same backend. The FLOPs ratio is the share of the dense model's arithmetic the pruned "
                                    "model keeps: the latency ratio a backend would reach if time followed FLOPs.",
                               class_="note")]
    head = ["backend", "precision", "mode", "batch", unit("pruned p50", "ms"), unit("p90 / p99", "ms"),
            unit("dense p50", "ms"), "pruned \u00f7 dense", "FLOPs ratio"]
    rows: list[Any] = []
    groups = _latency_groups(lat)
    for (fi, glabel), comps in groups.items():
        f = lat["files"][fi]
        rows.append(group_row(glabel, len(head), f"FLOPs ratio {ratio(comps[0]['flops_ratio'])} \u00b7 {_name(f['file'])}"))
        for c in comps:
            p, dn = c["pruned"] or {}, c["dense"] or {}
            noisy = Raw(' <span class="badge na" title="coefficient of variation above the noise limit">noisy</span>') \
                if c["noisy"] else Raw("")
            rows.append([c["backend_label"], precision_text(c["precision"]), str(c["mode"] or "-"), str(c["batch"]),
                         Raw(e(ms(p.get("p50_ms"))) + noisy), f"{ms(p.get('p90_ms'))} / {ms(p.get('p99_ms'))}",
                         ms(dn.get("p50_ms")), Raw(f"<strong>{e(ratio(c['measured_ratio']))}</strong>"),
                         ratio(c["flops_ratio"])])
    for u in _unique_unavailable(lat):
        rows.append(na_row(u["backend_label"], len(head), f"not measured: {u['reason']}"))
    parts.append(table(head, rows, num_from=3, cls="rowlabels compact"))
    plot = _latency_plot(lat)
    if plot:
        parts.append(plot)
    stage_rows: list[Any] = []
    for c in lat["comparisons"]:
        if not c["stages"]:
            continue
        total = sum((s or {}).get("p50_ms") or 0 for s in c["stages"])
        e2e = (c["pruned"] or {}).get("p50_ms")
        stage_rows.append(group_row(f"{c['graphs_label']}: {c['backend_label']} {precision_text(c['precision'])}, batch "
                                    f"{c['batch']}", 6))
        for i, s in enumerate(c["stages"]):
            s = s or {}
            share = (s.get("p50_ms") or 0) / total if total else None
            stage_rows.append([f"stage {i}", ms(s.get("p50_ms")), ms(s.get("p90_ms")), ms(s.get("p99_ms")), pct(share, 0),
                               "noisy" if s.get("noisy") else ""])
        stage_rows.append(Raw(f'<tr class="total"><th scope="row">sum of stages</th><td class="num">{e(ms(total))}</td>'
                              f'<td colspan="4" class="note">the chain end to end: {e(ms(e2e))} ms, so '
                              f"{e(ms(max(0.0, (e2e or 0) - total)))} ms between stages</td></tr>"))
    if stage_rows:
        parts.append(tag("h3", "Per stage (stage chain)"))
        parts.append(table(["stage", unit("p50", "ms"), unit("p90", "ms"), unit("p99", "ms"), "share", ""], stage_rows,
                           num_from=1, cls="compact"))
    seen: dict[str, list[str]] = {}
    for f in lat["files"]:
        items = {**{k: v for k, v in (f["machine"] or {}).items()}, **{f"setting: {k}": v for k, v in f["settings"].items()}}
        if items:
            seen.setdefault(repr(sorted(items.items(), key=lambda kv: kv[0])), []).append(f["file"])
    for f in lat["files"]:
        items = {**{k: v for k, v in (f["machine"] or {}).items()}, **{f"setting: {k}": v for k, v in f["settings"].items()}}
        k = repr(sorted(items.items(), key=lambda kv: kv[0]))
        if items and k in seen:
            files = seen.pop(k)
            parts.append(tag("h3", "Measured on"))
            parts.append(_kv({**{n: _show(v) for n, v in items.items()}, "from": ", ".join(_name(x) for x in files)}))
    return _section("latency", "Latency", join(parts))


def _show(v: Any) -> str:
    if v is None or v == "" or v == []:
        return "none"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    if isinstance(v, dict):
        return ", ".join(f"{k}: {x}" for k, x in v.items())
    return str(v)


def _name(path: str) -> str:
    return str(path).replace("\\", "/").rsplit("/", 1)[-1]


def _unique_unavailable(lat: dict[str, Any]) -> list[dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for u in lat["unavailable"]:
        out.setdefault((u["backend_label"], u["reason"]), u)
    return list(out.values())


def _latency_groups(lat: dict[str, Any]) -> dict[tuple[int, str], list[dict[str, Any]]]:
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for c in lat["comparisons"]:
        groups.setdefault((c["file_index"], c["graphs_label"]), []).append(c)
    return groups


def _latency_plot(lat: dict[str, Any]) -> Raw | None:
    buckets: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for c in lat["comparisons"]:
        buckets.setdefault((c["file_index"], c["graphs_label"], c["backend_label"], str(c["precision"]), c["batch"]), []).append(c)
    groups = []
    for (_, glabel, blabel, _, batch), comps in buckets.items():
        bars = []
        dn = next((c["dense"] for c in comps if c["dense"] and c["dense"].get("p50_ms") is not None), None)
        if dn:
            bars.append(S.Bar("dense", [S.Segment(float(dn["p50_ms"]), "dense", S.GREY)], f"{ms(dn['p50_ms'])} ms"))
        for c in comps:
            p = c["pruned"]
            if not p or p.get("p50_ms") is None:
                continue
            if c["stages"] and all(s and s.get("p50_ms") is not None for s in c["stages"]):
                segs = [S.Segment(float(s["p50_ms"]), f"stage {i}", S.STAGE_SHADES[min(i, len(S.STAGE_SHADES) - 1)])
                        for i, s in enumerate(c["stages"])]
                rest = float(p["p50_ms"]) - sum(x.value for x in segs)
                if rest > 0:
                    segs.append(S.Segment(rest, "between stages", "#BDBDBD"))
            else:
                segs = [S.Segment(float(p["p50_ms"]), "pruned", S.ORANGE)]
            bars.append(S.Bar(f"pruned, {c['mode']}", segs, f"{ms(p['p50_ms'])} ms"))
        if not bars:
            continue
        fr = comps[0]["flops_ratio"]
        limit = float(dn["p50_ms"]) * fr if dn and fr else None
        groups.append(S.BarGroup(f"{glabel}: {blabel} {precision_text(comps[0]['precision'])}, batch {batch}", bars, limit,
                                 f"FLOPs limit: dense \u00d7 {ratio(fr)}"))
    if not groups:
        return None
    n_stages = max((len(c["stages"] or []) for c in lat["comparisons"]), default=0)
    legend = S.Legend([("dense", S.GREY, "box")] + [(f"stage {i}", S.STAGE_SHADES[min(i, 5)], "box") for i in range(n_stages)]
                      + ([("pruned (fused)", S.ORANGE, "box")] if any(not c["stages"] for c in lat["comparisons"]) else [])
                      + [("dense \u00d7 FLOPs ratio", S.DARK, "dash")])
    desc = "; ".join(f"{g.label}: " + ", ".join(f"{b.label} {b.text}" for b in g.bars) for g in groups)
    svg = S.bar_groups(groups, "ms per batch (p50)", "Latency per batch, pruned against dense", desc, legend, width=920)
    cap = tag("figcaption", "p50 latency per batch. The stage chain's bar is split into its stages (grey: time between "
                            "them); the dashed line marks the dense latency times the FLOPs ratio, where a pruned model "
                            "whose time followed its FLOPs would end.")
    return tag("figure", join([Raw(svg), cap]))


def _sweep(d: dict[str, Any]) -> Raw:
    sw = d["sweep"]
    if not sw:
        return Raw("")
    series = []
    for i, (label, pts) in enumerate(sw["accuracy"].items()):
        series.append(S.Series(label, [tuple(p) for p in pts], S.SERIES[i % len(S.SERIES)], S.MARKERS[i % len(S.MARKERS)]))
    if sw["reference_accuracy"]:
        series.append(S.Series("reference", [tuple(p) for p in sw["reference_accuracy"]], S.DARK, "square", dashed=True))
    xt = sorted({*sw["keep_ratios"]})
    acc = S.line_chart(series, "keep ratio \u03c1", "top-1 (%)", "Top-1 against keep ratio",
                       "; ".join(f"{s.label}: " + ", ".join(f"{x:g} \u2192 {y:.2f}%" for x, y in s.points) for s in series),
                       y_format="{:.2f}", x_ticks=xt)
    plots = [tag("figure", join([Raw(acc), tag("figcaption", "Top-1 of the stage chain and of the reference, per keep ratio.")]))]
    lat_series = []
    for i, (label, pts) in enumerate(sw["latency_ratio"].items()):
        lat_series.append(S.Series(label, [tuple(p) for p in pts], S.SERIES[i % len(S.SERIES)], S.MARKERS[i % len(S.MARKERS)]))
    if sw["flops_ratio"]:
        lat_series.append(S.Series("FLOPs ratio (the limit)", [tuple(p) for p in sw["flops_ratio"]], S.DARK, "square",
                                   dashed=True))
    if sw["latency_ratio"]:
        svg = S.line_chart(lat_series, "keep ratio \u03c1", "pruned \u00f7 dense latency", "Latency ratio against keep ratio",
                           "; ".join(f"{s.label}: " + ", ".join(f"{x:g} \u2192 {y:.2f}" for x, y in s.points) for s in lat_series),
                           y_format="{:.2f}", x_ticks=xt)
        plots.append(tag("figure", join([Raw(svg), tag("figcaption", "Measured p50 latency, pruned over dense, against the "
                                                                     "FLOPs ratio it tends to.")])))
    body = join([tag("p", f"Graph sets of {len(sw['keep_ratios'])} keep ratios were validated "
                          f"({', '.join(f'{x:g}' for x in sw['keep_ratios'])}).", class_="note"),
                 tag("div", join(plots), class_="plots")])
    return _section("sweep", "Accuracy and latency against keep ratio", body)


def _engines(d: dict[str, Any]) -> Raw:
    if not d["engines"]:
        return Raw("")
    parts: list[object] = [tag("p", "Each engine layer's precision is the data type of its first output, as the layer "
                                    "report beside the engine (TensorRT's engine inspector) gives it. Reformats are the "
                                    "layers TensorRT adds to convert between types or layouts.", class_="note")]
    for g in d["engines"]:
        title = " ".join(x for x in [g.get("backend_label") or "engines", g.get("version") or ""] if x)
        target = f" for {g['target']}" if g.get("target") else ""
        parts.append(tag("h3", f"{title}{target}"))
        parts.append(_kv({"directory": Raw(f"<code>{e(g['dir'])}</code>"), "backend": g.get("backend_label") or "-",
                          "version": g.get("version") or "-", "target": g.get("target") or "-",
                          "precision": precision_label(g["precision"]), "keep ratio": f"{g['keep_ratio']:g}",
                          "manifest sha256": Raw(f"<code>{e(short(g['sha256'], 16))}</code>"),
                          **{k.replace("_", " "): _show(v) for k, v in (g.get("settings") or {}).items()}}))
        precisions: list[str] = []
        for en in g["entries"]:
            for p in ((en["layers"] or {}).get("precisions") or {}):
                if p not in precisions:
                    precisions.append(p)
        head = ["engine", "batch", "layers", *[p.upper() for p in precisions], "reformats", "mix", "layer report"]
        rows: list[Any] = []
        for en in g["entries"]:
            rep = en["layers"]
            if rep is None:
                rows.append(Raw(f"<tr class=\"na\"><th scope=\"row\">{e(en['name'])}</th><td class=\"num\">{en['batch']}</td>"
                                f"<td colspan=\"{len(precisions) + 4}\">layer precisions not available: {e(en['problem'])}"
                                "</td></tr>"))
                continue
            hist = rep["precisions"]
            bar = S.share_bar([(p.upper(), float(hist.get(p, 0)), S.PRECISION_COLOURS.get(p, S.GREY)) for p in precisions
                               if hist.get(p)], f"{en['name']} layer precisions", width=160, height=12)
            rows.append([en["name"], str(en["batch"]), str(rep["layers"]), *[str(hist.get(p, 0)) for p in precisions],
                         "-" if rep["reformats"] is None else str(rep["reformats"]), Raw(bar),
                         Raw(f"<code>{e(en['layer_report'])}</code>")])
        parts.append(table(head, rows, num_from=1, cls="compact", text=(len(head) - 2, len(head) - 1)))
        if precisions:
            key_items = join(Raw(f"<span class=\"swatch\" style=\"background:{S.PRECISION_COLOURS.get(p, S.GREY)}\"></span>"
                                 f"{e(p.upper())}") for p in precisions)
            parts.append(tag("p", join(["Mix: ", key_items], " "), class_="note legend"))
    return _section("engines", "Engines: layer precisions", join(parts))


def _thresholds(d: dict[str, Any]) -> Raw:
    parts: list[object] = [tag("p", "The checks of pipeline.comparison.thresholds for each validation's precision profile "
                                    "(enforced where 'dvit validate --require' was given). Failed ones open.", class_="note")]
    for r in d["validations"]:
        req = r["requirements"]
        rows = []
        for c in req["checks"]:
            v = c.get("value")
            rows.append([c["name"], "-" if v is None else f"{v:.6g}", f"{c['op']} {c['threshold']:.6g}",
                         badge(c.get("passed"), "met", "missed")])
        met = len(req["checks"]) - len(req["failed"])
        what = (f" {r['label']}: {str(req['profile']).upper()} profile, {met} of {len(req['checks'])} checks met"
                f"{'' if req['enforced'] else ' (reported, not enforced)'}")
        summary = tag("summary", join([badge(req["passed"]), what]))
        parts.append(tag("details", join([summary, table(["check", "value", "threshold", ""], rows, num_from=1,
                                                         cls="compact")]),
                         open=None if req["passed"] else "open"))
    return _section("thresholds", "Thresholds", join(parts))


def _provenance(d: dict[str, Any]) -> Raw:
    parts: list[object] = []
    sets: dict[str, dict[str, Any]] = {}
    for r in d["validations"]:
        g = r["graph_set"]
        sets.setdefault(g["sha256"] or g["dir"], {"g": g, "ids": []})["ids"].append(r["id"])
    rows = []
    for v in sets.values():
        g = v["g"]
        ck = (g.get("checkpoint") or {}).get("sha256")
        status = (badge(True, "unchanged") if g["manifest_matches"] else badge(False, no="changed since validation")
                  if g["manifest_here"] else tag("span", "not on this machine", class_="badge na"))
        rows.append([Raw(f"<code>{e(g['dir'] or '-')}</code>"), g["kind"] or "-", precision_label(g["precision"]),
                     "-" if g["keep_ratio"] is None else f"{g['keep_ratio']:g}", ", ".join(map(str, g["keep_counts"])),
                     ", ".join(map(str, g["batch_sizes"] or [])) or "-", Raw(f"<code>{e(short(g['sha256']))}</code>"),
                     Raw(f"<code>{e(short(ck))}</code>"), status])
    parts.append(tag("h3", "Graph sets validated"))
    parts.append(table(["directory", "kind", "precision", "keep ratio", "kept tokens", "batch sizes", "manifest sha256",
                        "checkpoint sha256", "since validation"], rows, num_from=99, cls="compact"))
    cks: dict[str, str] = {}
    for v in sets.values():
        for field_ in ("checkpoint", "teacher_checkpoint"):
            c = v["g"].get(field_) or {}
            if c.get("sha256"):
                cks.setdefault(c["sha256"], f"{'teacher' if field_ == 'teacher_checkpoint' else 'student'}: "
                               f"{shown_path(c.get('path')) or '-'}")
    if cks:
        parts.append(tag("h3", "Checkpoints"))
        parts.append(table(["sha256", "what"], [[Raw(f"<code>{e(s)}</code>"), p] for s, p in cks.items()], num_from=99,
                           cls="compact"))
    for g in d["engines"]:
        parts.append(tag("p", f"Engines {g['dir']}: {g.get('backend_label') or '?'} {g.get('version') or ''}, target "
                              f"{g.get('target') or '-'}, manifest {short(g['sha256'])} (every engine's hash verified).",
                         class_="note"))
    refs = {}
    for r in d["validations"]:
        refs[r["reference"]["name"]] = r["reference"]["kind"]
    ds = d["validations"][0]["dataset"]
    parts.append(tag("h3", "Reference and data"))
    kv: dict[str, Any] = {"references": "; ".join(f"{n} ({k})" for n, k in refs.items()),
                          "test images": f"{ds.get('samples')} of {ds.get('source')}, from image {ds.get('first')}"}
    tm = d["token_masks"]
    if tm:
        kv["recording"] = Raw(f"<code>{e(tm['file'])}</code> (checkpoint <code>{e(short(tm['checkpoint_sha256']))}</code>)")
    parts.append(_kv(kv))
    parts.append(tag("h3", "Inputs"))
    parts.append(table(["role", "file", "sha256"], [[s["role"], Raw(f"<code>{e(s['path'])}</code>"),
                                                     Raw(f"<code>{e(s['sha256'])}</code>")] for s in d["inputs"]],
                       num_from=99, cls="compact"))
    parts.append(tag("h3", "Report made on"))
    parts.append(_kv({**d["made_on"], "created (UTC)": d["created"]}))
    return _section("provenance", "Provenance", join(parts))


def _kv(items: dict[str, Any]) -> Raw:
    """A definition list; long ones in two columns of pairs."""
    return tag("dl", join(Raw(f"<dt>{e(k)}</dt><dd>{e(v) if isinstance(v, Raw) else e(str(v))}</dd>") for k, v in items.items()),
               class_="kv wide" if len(items) > 6 else "kv")


def _section(id_: str, title: str, body: Raw) -> Raw:
    return tag("section", join([tag("h2", title), body]), id=id_)


SECTIONS = (("accuracy", "Accuracy"), ("tokens", "Pruned tokens"), ("boundaries", "Token error"), ("latency", "Latency"),
            ("sweep", "Keep ratio"), ("engines", "Engines"), ("thresholds", "Thresholds"), ("provenance", "Provenance"))


def render(d: dict[str, Any], pictures: list[Any]) -> str:
    first = d["validations"][0]
    gs = first["graph_set"]
    n = len(d["validations"])
    meta = [x for x in [gs.get("model"), f"keep ratio {gs['keep_ratio']:g}" if gs.get("keep_ratio") is not None else None,
                        f"{n} validation{'s' if n > 1 else ''}",
                        f"made {d['created'].replace('T', ' ').replace('+00:00', ' UTC')}"] if x]
    present = {"sweep": bool(d["sweep"]), "engines": bool(d["engines"])}
    toc = tag("nav", join(tag("a", label, href=f"#{i}") for i, label in SECTIONS if present.get(i, True)), class_="toc",
              aria_label="Contents")
    body = join([
        tag("header", join([tag("p", "dvit-edge report", class_="kicker"), tag("h1", d["title"]),
                            tag("p", " \u00b7 ".join(meta), class_="meta")])),
        _summary(d), toc, _accuracy(d), _tokens(d, pictures), _boundaries(d), _latency(d), _sweep(d), _engines(d),
        _thresholds(d), _provenance(d),
        tag("footer", "Made by \u2018dvit report\u2019 from the inputs listed under Provenance. report.json beside this page "
                      "holds every figure shown; report.md, the summary tables."),
    ])
    return ("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            "<meta name=\"color-scheme\" content=\"light\">\n"
            f"<title>{e(d['title'])}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n")
