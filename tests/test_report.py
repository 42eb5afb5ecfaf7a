"""dvit report: the page made from real validation results of the tiny exported model, rendered in a real
headless Chromium (tests/report_browser.py).

Inputs: two exports of one tiny checkpoint (keep ratios 0.7 and 0.5), validated by `dvit validate`'s API
against PyTorch and against a recording made by `dvit reference`; latency results in the "dvit-edge/latency/v1"
format and an engine graph set with TensorRT engine-inspector layer reports, both written by hand below (no
TensorRT runs here). The browser tests skip, saying why, where no Chromium is installed.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from report_browser import SKIP_REASON, BrowserError, Chromium, PageLoad, decode_png, find_chromium
from test_precision import make_tiny_export, tiny_model

from pipeline import report, validate
from pipeline.errors import DvitError
from pipeline.graphset import GraphSet, batch_section, write_graph_set
from pipeline.io import atomic_write_json, sha256_file
from pipeline.latency import ratios as latency_ratios
from pipeline.manifest import file_entry
from pipeline.report.engines import parse_layer_report
from pipeline.report.formats import mode_label
from pipeline.results.latency import LatencyResult

LIMIT = 16
IMAGES = 6
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- hand-made inputs (formats, not figures of ours)
def stats(p50: float, cv: float = 0.02, noisy: bool = False) -> dict[str, Any]:
    return {"iterations": 200, "p50_ms": p50, "p90_ms": round(p50 * 1.06, 4), "p95_ms": round(p50 * 1.09, 4),
            "p99_ms": round(p50 * 1.17, 4), "mean_ms": round(p50 * 1.02, 4), "cv": cv, "noisy": noisy}


def latency_sample(sets: list[tuple[Path, list[float], float, float, float, float]]) -> dict[str, Any]:
    """A "dvit-edge/latency/v1" result of ONNX Runtime on the CPU, for graph sets given as (directory, stage p50s,
    dense p50, fused p50, pruned FLOPs, dense FLOPs)."""
    runs, graph_sets = [], []
    for graphs, stage_ms, dense_ms, fused_ms, fp, fd in sets:
        chain_ms = round(sum(stage_ms) * 1.04, 4)
        common = {"graphs": str(graphs), "kind": "export", "precision": "fp32", "backend": "onnxruntime", "io": "host",
                  "cuda_graph": False, "batch": 4, "gpu": None}
        runs += [
            {**common, "model": "pruned", "mode": "chain", "end_to_end": stats(chain_ms),
             "stages": [stats(s) for s in stage_ms], "throughput_ips": round(4000 / chain_ms, 1)},
            {**common, "model": "pruned", "mode": "fused", "end_to_end": stats(fused_ms, 0.11, True), "stages": None,
             "throughput_ips": round(4000 / fused_ms, 1)},
            {**common, "model": "dense", "mode": "fused", "end_to_end": stats(dense_ms), "stages": None,
             "throughput_ips": round(4000 / dense_ms, 1)},
        ]
        graph_sets.append({"graphs": str(graphs), "kind": "export", "precision": ["fp32"] * 4,
                           "flops": {"pruned": fp, "dense": fd, "ratio": fp / fd}})
    flops = graph_sets[0]["flops"]
    written = latency_ratios(runs, {g["graphs"]: g["flops"] for g in graph_sets})  # as `dvit latency` writes them
    return {
        "format": "dvit-edge/latency/v1",
        "machine": {"cpu": "x86-64", "cores": 2, "affinity": [0], "os": "Linux", "python": "3.11",
                    "versions": {"onnxruntime": "1.24"}, "load_average": [0.5, 0.4, 0.3]},
        "settings": {"warmup_s": 1.0, "duration_s": 5.0, "min_iters": 50, "rounds": 5, "noisy_cv": 0.1, "batch_sizes": [4],
                     "backend": "onnxruntime", "threads": 1, "pool": "shared", "pinned_cpus": [0], "cuda_graph": None},
        "flops": flops, "graph_sets": graph_sets, "runs": runs,
        "ratios": written, "unavailable": [],
    }


def latency_unavailable(graphs: list[Path]) -> dict[str, Any]:
    """What the TensorRT measurement writes where no GPU is usable: the reason instead of numbers."""
    why = "no GPU on this machine"
    return {"format": "dvit-edge/latency/v1", "machine": {"cpu": "x86-64", "cores": 2}, "settings": {"backend": "tensorrt"},
            "flops": None, "graph_sets": [], "ratios": [],
            "runs": [{"graphs": str(g), "kind": "engine", "precision": "fp16", "backend": "tensorrt", "batch": 4,
                      "unavailable": why} for g in graphs],
            "unavailable": [{"backend": "tensorrt", "reason": why}]}


def inspector_layers(name: str, n_blocks: int, pruning: bool) -> dict[str, Any]:
    """A layer report in the JSON of TensorRT's engine inspector (ProfilingVerbosity.DETAILED)."""
    def layer(lname: str, kind: str, dtype: str) -> dict[str, Any]:
        fmt = {"FP16": "Row major linear FP16 format", "FP32": "Row major linear FP32", "Int32": "Row major linear Int32"}
        return {"Name": lname, "LayerType": kind, "Inputs": [{"Name": f"{lname}_in", "Location": "Device",
                                                              "Dimensions": [4, 35, 32], "Format/Datatype": fmt[dtype]}],
                "Outputs": [{"Name": f"{lname}_out", "Location": "Device", "Dimensions": [4, 35, 32],
                             "Format/Datatype": fmt[dtype]}], "TacticName": "", "StreamId": 0, "Metadata": ""}
    layers = [layer(f"{name}/Reformatting CopyNode for Input Tensor 0", "Reformat", "FP16")]
    if pruning:
        layers += [layer(f"{name}/score_predictor/MatMul", "CaskGemmMatrixMultiply", "FP32"),
                   layer(f"{name}/TopK", "TopK", "Int32"), layer(f"{name}/Gather", "Gather", "FP16")]
    for b in range(n_blocks):
        layers += [layer(f"{name}/blocks.{b}/{part}", "Myelin", "FP16") for part in ("norm1", "attn", "norm2", "mlp")]
    return {"Layers": layers, "Bindings": ["input", "output"]}


def make_engine_set(root: Path, export_dir: Path) -> Path:
    """An engine graph set as the engine build writes it: a plan per graph, a layer report beside each (none for
    the fused engine: a report must tolerate that)."""
    gs = GraphSet.load(export_dir)
    graphs = {}
    for b, bg in gs.batches.items():
        (root / f"b{b}").mkdir(parents=True, exist_ok=True)

        def engine(e: Any, with_layers: bool = True, b: int = b) -> dict[str, Any]:
            stem = f"b{b}/{e.name}"
            (root / f"{stem}.plan").write_bytes(b"vtrt" + bytes(60))
            info = {k: e.info[k] for k in ("index", "keep_count", "inputs", "outputs") if k in e.info}
            if with_layers:
                atomic_write_json(root / f"{stem}.layers.json", inspector_layers(e.name, 1, bool(e.index)))
                info["layers"] = file_entry(root, f"{stem}.layers.json")
            return file_entry(root, f"{stem}.plan", **info)

        graphs[b] = batch_section([engine(e) for e in bg.stages], engine(bg.fused, with_layers=False), None)
    header = {**gs.header(), "precision": ["fp16"] * gs.num_stages}
    write_graph_set(root, "engine", header, graphs, backend={"backend": "tensorrt-rtx", "version": "1.7.1.116"},
                    target="desktop-rtx", build={"backend": "tensorrt-rtx", "version": "1.7.1.116", "builder_flags": [],
                                                 "builder_optimization_level": 3, "compute_capabilities": ["SM89"]},
                    source={"kind": gs.kind, "sha256": gs.sha256})
    return root


# ---------------------------------------------------------------- fixture: real inputs, one report, one page load
FACTS_JS = """(() => {
  const imgs = [...document.images];
  const attrs = [...document.querySelectorAll('[src],[href]')].map(n => n.getAttribute('src') || n.getAttribute('href'));
  return {
    svgs: [...document.querySelectorAll('svg.plot')].map(s => {
      const r = s.getBoundingClientRect(); return {cls: s.getAttribute('class'), w: r.width, h: r.height,
                                                    marks: s.querySelectorAll('rect,polyline,circle,line').length};
    }),
    images: imgs.map(i => ({data: i.src.startsWith('data:image/png;base64,'), ok: i.complete && i.naturalWidth > 0,
                            w: i.getBoundingClientRect().width, alt: i.alt})),
    attrs: attrs,
    scripts: document.scripts.length,
    links: document.querySelectorAll('link').length,
    headline: Object.fromEntries([...document.querySelectorAll('[data-key]')].map(n => [n.dataset.key, n.textContent])),
    sections: [...document.querySelectorAll('main > section[id]')].map(s => s.id),
    notMeasured: [...document.querySelectorAll('tr.na td, .warnline')].map(n => n.textContent),
    title: document.title,
  };
})()"""


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from pipeline.export import export
    from pipeline.reference import record

    root = tmp_path_factory.mktemp("report")
    exp07, ckpt = make_tiny_export(root, batch_sizes=(4,))
    exp05 = root / "export-0.5"
    export(ckpt, exp05, keep_ratio=0.5, batch_sizes=(4,), verify_images=4, progress=False)
    ref = record(root / "ref.npz", graphs=str(exp07), limit=LIMIT, threads=1, progress=False).with_suffix(".npz")

    def val(graphs: Path, name: str, **kw: Any) -> Path:
        r = validate.validate(graphs, limit=LIMIT, threads=1, progress=False, consistency_samples=0, **kw)
        return atomic_write_json(root / name, r)

    v07, v05 = val(exp07, "v07.json"), val(exp05, "v05.json")
    v07rec = val(exp07, "v07-recorded.json", reference=str(ref))
    ort = atomic_write_json(root / "latency-ort.json", latency_sample([
        (exp07, [0.21, 0.48, 0.36, 0.27], 1.92, 1.18, 4.71e6, 7.38e6),
        (exp05, [0.21, 0.37, 0.22, 0.15], 1.92, 0.86, 3.30e6, 7.38e6)]))
    engines = make_engine_set(root / "engines", exp07)
    trt = atomic_write_json(root / "latency-trt.json", latency_unavailable([engines]))
    args = {"validations": [v07, v05, v07rec], "latencies": [ort, trt], "engines": [engines], "reference": ref}
    out = report.make_report(args["validations"], root / "report", latencies=args["latencies"], engines=args["engines"],
                             reference=ref, images=IMAGES)
    page: PageLoad | None = None
    skip = None
    if find_chromium() is None:
        skip = SKIP_REASON
    else:
        try:
            with Chromium() as browser:
                page = browser.load(out / "report.html", FACTS_JS)
        except BrowserError as e:
            skip = f"Chromium did not start here: {e}"
    if page is not None and os.environ.get("DVIT_REPORT_SCREENSHOT"):
        Path(os.environ["DVIT_REPORT_SCREENSHOT"]).write_bytes(page.screenshot)
    return {"root": root, "out": out, "ckpt": ckpt, "exp07": exp07, "exp05": exp05, "ref": ref, "page": page, "skip": skip,
            "json": json.loads((out / "report.json").read_text()), "md": (out / "report.md").read_text(),
            "html": (out / "report.html").read_text(), **args}


def page_of(made: dict[str, Any]) -> PageLoad:
    if made["page"] is None:
        pytest.skip(made["skip"])
    return made["page"]


# ---------------------------------------------------------------- the files
def test_report_json_holds_inputs_with_hashes_and_the_figures(made: dict[str, Any]) -> None:
    d = made["json"]
    assert sorted(p.name for p in made["out"].iterdir()) == ["report.html", "report.json", "report.md"]
    assert d["format"] == report.FORMAT
    by_path = {i["path"]: i for i in d["inputs"]}
    for p in [*made["validations"], *made["latencies"], made["ref"]]:
        assert by_path[str(p)]["sha256"] == sha256_file(p)
    assert by_path[str(made["engines"][0] / "manifest.json")]["sha256"] == sha256_file(made["engines"][0] / "manifest.json")
    # one row per validation JSON, with what the graph set's manifest says
    v = [json.loads(Path(p).read_text()) for p in made["validations"]]
    rows = d["validations"]
    assert [r["graph_set"]["keep_ratio"] for r in rows] == [0.7, 0.5, 0.7]
    assert [r["graph_set"]["keep_counts"] for r in rows] == [[34, 24, 16], [24, 12, 6], [34, 24, 16]]
    assert all(r["graph_set"]["manifest_matches"] for r in rows)
    for r, src in zip(rows, v):
        assert r["chain"]["accuracy"] == src["chain"]["accuracy"] and r["fused"]["agreement"] == src["fused"]["agreement"]
        assert [k["chain_iou_mean"] for k in r["kept"]] == [k["iou_mean"] for k in src["chain"]["kept"]]
        assert r["boundaries"] == src["chain"]["boundaries"] and len(r["boundaries"]) == 3
    assert d["sources"]["validations"] == v  # everything the page was made from
    # headline: the first validation, and the fused ONNX Runtime run of the first latency result
    h = d["headline"]
    assert h["accuracy"] == v[0]["chain"]["accuracy"] and h["reference_accuracy"] == v[0]["reference"]["accuracy"]
    assert h["accuracy_delta_points"] == pytest.approx(100 * (v[0]["chain"]["accuracy"] - v[0]["reference"]["accuracy"]))
    assert h["latency"]["mode"] == "fused" and h["latency"]["measured_ratio"] == pytest.approx(1.18 / 1.92)
    assert h["latency"]["flops_ratio"] == pytest.approx(4.71 / 7.38)
    assert h["not_measured"] == ["TensorRT not measured: no GPU on this machine"]
    assert h["thresholds"] == {"passed": 3, "total": 3, "all_passed": True, "failed": []}
    assert h["text"]["tokens"] == "49 \u2192 34 \u2192 24 \u2192 16"


def test_latency_pairs_pruned_with_dense_and_keeps_the_unmeasured(made: dict[str, Any]) -> None:
    lat = made["json"]["latency"]
    comps = lat["comparisons"]
    assert [(c["file_index"], c["mode"], c["keep_ratio"]) for c in comps] == [(0, "chain", 0.7), (0, "fused", 0.7),
                                                                              (0, "chain", 0.5), (0, "fused", 0.5)]
    assert [c["flops_ratio"] for c in comps] == pytest.approx([4.71 / 7.38] * 2 + [3.30 / 7.38] * 2)  # per graph set
    chain = comps[0]
    assert chain["measured_ratio"] == pytest.approx(round((0.21 + 0.48 + 0.36 + 0.27) * 1.04, 4) / 1.92)
    assert [s["p50_ms"] for s in chain["stages"]] == [0.21, 0.48, 0.36, 0.27] and comps[1]["noisy"]
    assert {(u["file_index"], u["backend_label"], u["reason"]) for u in lat["unavailable"]} == {
        (1, "TensorRT", "no GPU on this machine")}
    assert [mode_label({"mode": "fused", "io": "device"}), mode_label({"mode": "chain", "cuda_graph": True})] == [
        "fused, device I/O", "chain, CUDA graph"]
    sweep = made["json"]["sweep"]
    assert sweep["keep_ratios"] == [0.5, 0.7] and sweep["flops_ratio"] == [[0.5, pytest.approx(3.30 / 7.38)],
                                                                          [0.7, pytest.approx(4.71 / 7.38)]]


def test_report_shows_the_ratio_latency_wrote_paired_by_its_rule(made: dict[str, Any], tmp_path: Path) -> None:
    """A graph set timed without a dense run of its own (exported without --teacher): `dvit latency` pairs none of
    its pruned runs with another set's teacher, and neither does the report; the ratio shown is the one the latency
    result holds (altered here to tell it from one the report would compute again)."""
    exp07, exp05 = str(made["exp07"]), str(made["exp05"])
    lat = latency_sample([(made["exp07"], [0.21, 0.48, 0.36, 0.27], 1.92, 1.18, 4.71e6, 7.38e6),
                          (made["exp05"], [0.21, 0.37, 0.22, 0.15], 1.92, 0.86, 3.30e6, 7.38e6)])
    lat["runs"] = [r for r in lat["runs"] if not (r["graphs"] == exp05 and r["model"] == "dense")]
    lat["ratios"] = latency_ratios(lat["runs"], {g["graphs"]: g["flops"] for g in lat["graph_sets"]})
    assert [(q["graphs"], q["mode"]) for q in lat["ratios"]] == [(exp07, "chain"), (exp07, "fused")]
    lone = [r for r in lat["runs"] if r["graphs"] == exp05]
    variant = ("backend", "batch", "io", "cuda_graph")
    assert all(any(all(d[k] == r[k] for k in variant) for d in lat["runs"] if d["model"] == "dense") for r in lone)
    for q, shown in zip(lat["ratios"], (0.55, 0.6)):
        q["latency_ratio_p50"] = shown
    path = atomic_write_json(tmp_path / "latency.json", lat)
    assert LatencyResult.load(path).ratios == lat["ratios"]
    out = report.make_report([made["validations"][0]], tmp_path / "r", latencies=[path])
    d = json.loads((out / "report.json").read_text())
    comps = d["latency"]["comparisons"]
    assert [(c["graphs"], c["mode"], c["measured_ratio"]) for c in comps] == [
        (exp07, "chain", 0.55), (exp07, "fused", 0.6), (exp05, "chain", None), (exp05, "fused", None)]
    assert [c["dense"] and c["dense"]["p50_ms"] for c in comps] == [1.92, 1.92, None, None]
    assert d["headline"]["latency"]["measured_ratio"] == 0.6 and d["headline"]["text"]["latency_ratio"] == "0.60\u00d7"
    assert "| 0.55\u00d7 |" in (out / "report.md").read_text()


def test_engine_layer_precisions_from_the_reports_beside_the_engines(made: dict[str, Any]) -> None:
    (g,) = made["json"]["engines"]
    assert (g["backend_label"], g["version"], g["target"]) == ("TensorRT-RTX", "1.7.1.116", "desktop-rtx")
    by_name = {e["name"]: e for e in g["entries"]}
    assert by_name["stage0"]["layers"] == {"layers": 5, "precisions": {"fp16": 5}, "reformats": 1, "detailed": True}
    assert by_name["stage1"]["layers"]["precisions"] == {"fp32": 1, "fp16": 6, "int32": 1}
    assert by_name["fused"]["layers"] is None and by_name["fused"]["problem"] == "no layer report beside the engine"
    assert parse_layer_report({"Layers": ["a", "b"]}) == {"layers": 2, "precisions": {"unknown": 2},
                                                                 "reformats": None, "detailed": False}


def test_token_pictures_compose_kept_indices_into_the_patch_grid(made: dict[str, Any]) -> None:
    from pipeline.comparison.metrics import compose_all
    from pipeline.report.token_masks import masked
    from pipeline.results.reference import load_recording

    tm = made["json"]["token_masks"]
    rec = load_recording(made["ref"])
    ids = compose_all([rec.outputs[f"kept_indices_{i}"] for i in (1, 2, 3)])
    assert len(tm["images"]) == IMAGES and tm["keep_counts"] == [34, 24, 16] and tm["grid"] == 7
    for j, img in enumerate(tm["images"]):
        assert img["kept"] == [sorted(s[j].tolist()) for s in ids]
        assert all(set(b) <= set(a) for a, b in zip(img["kept"], img["kept"][1:]))  # pruned tokens never come back
        assert img["label"] == int(rec.data.labels[j]) and img["label_name"]
    # kept patches keep their pixels (enlarged), pruned ones are covered
    x = rec.data.images[0]
    pic = masked(x, np.asarray(tm["images"][0]["kept"][2]), 7, 4, 5)
    big = np.repeat(np.repeat(x[0], 5, 0), 5, 1)
    kept = tm["images"][0]["kept"][2][0]
    r, c = divmod(kept, 7)
    assert (pic[r * 20:(r + 1) * 20, c * 20:(c + 1) * 20, 0] == big[r * 20:(r + 1) * 20, c * 20:(c + 1) * 20]).all()
    pruned = next(p for p in range(49) if p not in tm["images"][0]["kept"][2])
    r, c = divmod(pruned, 7)
    assert not (pic[r * 20:(r + 1) * 20, c * 20:(c + 1) * 20, 0] == big[r * 20:(r + 1) * 20, c * 20:(c + 1) * 20]).all()


def test_markdown_and_json_agree_with_each_other(made: dict[str, Any]) -> None:
    md, d = made["md"], made["json"]
    for text in d["headline"]["text"].values():
        assert text in md
    assert "TensorRT not measured: no GPU on this machine" in md
    assert "| export, keep 0.7 | ONNX Runtime | FP32 | fused | 4 | 1.18 (noisy) | 1.92 | 0.61\u00d7 | 0.64\u00d7 |" in md
    assert md.count("\n| ") > 20  # the key tables are there


# ---------------------------------------------------------------- the page in a real browser
def test_page_is_self_contained(made: dict[str, Any]) -> None:
    html = made["html"]
    assert "<script" not in html.lower() and "<link" not in html.lower() and "@import" not in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html
    page = page_of(made)
    outside = [u for u in page.requests if not u.startswith("data:image/png;base64,")]
    assert outside == [page.url], outside  # the page itself, its inline pictures and nothing else
    assert page.facts["scripts"] == 0 and page.facts["links"] == 0
    external = [a for a in page.facts["attrs"] if not a.startswith(("#", "data:"))]
    assert external == []


def test_page_loads_without_console_errors(made: dict[str, Any]) -> None:
    page = page_of(made)
    assert page.errors == [], page.errors
    assert page.facts["title"] == made["json"]["title"]
    assert page.facts["sections"] == ["accuracy", "tokens", "boundaries", "latency", "sweep", "engines", "thresholds",
                                      "provenance"]


def test_screenshot_is_not_blank(made: dict[str, Any]) -> None:
    page = page_of(made)
    px = decode_png(page.screenshot)
    assert px.shape[1] == 1280 and px.shape[0] == page.size[1] > 2400  # the whole page, not just the window
    rgb = px[..., :3].astype(np.float64)
    non_white = (rgb < 245).any(axis=2)
    assert 0.04 < non_white.mean() < 0.6, non_white.mean()
    assert rgb.std() > 20
    # every band of the page holds something (no blank screenfuls in the middle)
    bands = [non_white[y:y + 600].mean() for y in range(0, px.shape[0] - 600, 600)]
    assert min(bands) > 0.005, bands


def test_every_plot_and_picture_is_rendered(made: dict[str, Any]) -> None:
    f = page_of(made).facts
    plots = f["svgs"]
    assert all(s["w"] > 50 and s["h"] > 5 and s["marks"] > 0 for s in plots), plots
    kinds = [s["cls"].split()[1] for s in plots]
    n_reports = sum(e["layers"] is not None for e in made["json"]["engines"][0]["entries"])
    assert kinds.count("bars") == 1 and kinds.count("lines") == 2 and kinds.count("share") == n_reports
    assert len(f["images"]) == IMAGES * 4  # input and each of the 3 pruning points
    assert all(i["data"] and i["ok"] and i["w"] >= 100 and i["alt"] for i in f["images"]), f["images"]


def test_page_headline_agrees_with_json_and_markdown(made: dict[str, Any]) -> None:
    f = page_of(made).facts
    text = made["json"]["headline"]["text"]
    assert f["headline"] == {f"headline.{k}": v for k, v in text.items()}
    for v in f["headline"].values():
        assert v in made["md"]
    assert any("TensorRT not measured: no GPU on this machine" in t for t in f["notMeasured"])  # summary
    assert "not measured: no GPU on this machine" in f["notMeasured"]  # in place of TensorRT's row in the table


def test_browser_harness_sees_errors_and_outside_requests(tmp_path: Path) -> None:
    """The checks above are not vacuous: a console error, a missing file and an outside URL are all caught."""
    if find_chromium() is None:
        pytest.skip(SKIP_REASON)
    bad = tmp_path / "bad.html"
    bad.write_text('<!doctype html><html><head><meta charset="utf-8"><title>t</title></head><body><p>x</p>'
                   '<img src="missing.png"><img src="http://example.invalid/x.png">'
                   '<script>console.error("boom")</script></body></html>')
    with Chromium() as browser:
        page = browser.load(bad)
    texts = [m["text"] for m in page.errors]
    assert "boom" in texts and any("ERR_FILE_NOT_FOUND" in t for t in texts), page.console
    assert "http://example.invalid/x.png" in page.requests


# ---------------------------------------------------------------- bad input: one line each, nothing written
def test_bad_input_is_one_line_and_writes_nothing(made: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "r"
    v07, l07 = made["validations"][0], made["latencies"][0]

    def refused(match: str, **kw: Any) -> None:
        kw.setdefault("validations", [v07])
        with pytest.raises(DvitError, match=match) as e:
            report.make_report(kw.pop("validations"), out, **kw)
        assert "\n" not in str(e.value)
        assert not out.exists()

    refused(r"no validation result to report on: run 'dvit validate --graphs DIR --json V.json' first", validations=[])
    refused(r"is a latency result, not a validation result: pass it with --latency", validations=[l07])
    refused(r"is a validation result, not a latency result: pass it with --validation", latencies=[v07])
    (tmp_path / "other.json").write_text(json.dumps({"format": "something/else"}))
    refused(r"other.json is not a dvit validation result \(format 'something/else', expected dvit-edge/validation/v2\)",
            validations=[tmp_path / "other.json"])
    (tmp_path / "old.json").write_text(json.dumps({"format": "dvit-edge/validation/v1"}))
    refused(r"old.json is a validation result of format dvit-edge/validation/v1, this version reads "
            r"dvit-edge/validation/v2: re-run 'dvit validate", validations=[tmp_path / "old.json"])
    (tmp_path / "broken.json").write_text("{")
    refused(r"broken.json is not a readable JSON file", validations=[tmp_path / "broken.json"])
    refused(r"validation result .*missing.json not found", validations=[tmp_path / "missing.json"])
    refused(r"--engines .* holds a 'export' manifest, not engines: point --engines at the output of 'dvit build'",
            engines=[made["exp07"]])
    refused(r"--images -1 is negative", images=-1)
    # a recording of another model than the validated graphs (another checkpoint, same architecture)
    from pipeline.checkpoint import save_checkpoint
    from pipeline.reference import record

    other = tmp_path / "other.pt"
    save_checkpoint(other, tiny_model(seed=1))
    ref = record(tmp_path / "other-ref.npz", checkpoint=str(other), limit=4, threads=1, progress=False)
    refused(r"other-ref.npz was recorded from another model \(checkpoint [0-9a-f]{12}, keep counts \[34, 24, 16\]\) than the "
            r"validated graphs .*: record one with 'dvit reference --graphs DIR --out REF.npz'", reference=ref)
    # a report never replaces a directory that is not a report
    keep = tmp_path / "runs"
    keep.mkdir()
    (keep / "precious.onnx").write_bytes(b"x")
    with pytest.raises(DvitError, match="exists and is not a previous report: choose a new --out"):
        report.make_report([v07], keep)
    assert (keep / "precious.onnx").exists()
    # a previous report is replaced
    report.make_report([v07], out)
    report.make_report([v07], out, title="again")
    assert json.loads((out / "report.json").read_text())["title"] == "again"


def test_cli_front(made: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = argparse.ArgumentParser()
    report.configure(p)
    args = p.parse_args(["--validation", *map(str, made["validations"][:2]), "--latency", str(made["latencies"][0]),
                         "--out", str(tmp_path / "r"), "--title", "Two keep ratios", "--images", "2"])
    assert report.main(args) == 0
    assert "report.html" in capsys.readouterr().out
    d = json.loads((tmp_path / "r" / "report.json").read_text())
    assert d["title"] == "Two keep ratios" and d["token_masks"] is None and len(d["validations"]) == 2
    assert "No pictures: pass --reference REF.npz" in (tmp_path / "r" / "report.html").read_text()


BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'timm', 'modelopt', 'onnx', 'onnxruntime'):
            raise ImportError(f'{name} is blocked: a device makes the report without it')
sys.meta_path.insert(0, Block())
"""


def test_report_is_made_without_torch_timm_modelopt(made: dict[str, Any], tmp_path: Path) -> None:
    """What a Jetson runs: every input, the recording included, with torch, timm, ModelOpt and ONNX blocked."""
    a = made
    code = BLOCKER + (
        "from pipeline.report import make_report\n"
        f"make_report({[str(p) for p in a['validations']]!r}, {str(tmp_path / 'r')!r}, "
        f"latencies={[str(p) for p in a['latencies']]!r}, engines={[str(p) for p in a['engines']]!r}, "
        f"reference={str(a['ref'])!r})\n"
        "try:\n    import torch\nexcept ImportError as e:\n    print('blocked:', e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "blocked: torch is blocked" in r.stdout
    d = json.loads((tmp_path / "r" / "report.json").read_text())
    assert d["headline"] == a["json"]["headline"] and len(d["token_masks"]["images"]) == report.DEFAULT_IMAGES


def test_keeps_working_when_the_graph_sets_are_gone(made: dict[str, Any], tmp_path: Path) -> None:
    """Validation JSONs copied off the machine that made them: the report says the directory is not here."""
    v = json.loads(Path(made["validations"][0]).read_text())
    v["graphs_dir"] = str(tmp_path / "elsewhere")
    moved = atomic_write_json(tmp_path / "v.json", v)
    out = report.make_report([moved], tmp_path / "r")
    g = json.loads((out / "report.json").read_text())["validations"][0]["graph_set"]
    assert not g["manifest_here"] and g["keep_ratio"] == 0.7 and g["checkpoint"]["sha256"] == v["reference"]["checkpoint"]["sha256"]
    assert "not on this machine" in (out / "report.html").read_text()
    shutil.rmtree(out)


# ---------------------------------------------------------------- the report's modules
REPORT = REPO / "pipeline" / "report"


def own_package_imports(source: str, module: str) -> list[str]:
    """The imports in `source` (of module `module` under pipeline.report) that take names from pipeline.report's
    __init__ (a submodule imported through the package, `from . import svg`, is not one)."""
    pkg = "pipeline.report"
    submodules = {p.stem for p in REPORT.glob("*.py")} - {"__init__"}
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            parts = module.split(".")
            base = parts[: len(parts) - node.level] if node.level else []
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            for a in node.names:
                if (target == pkg and a.name not in submodules) or f"{target}.{a.name}" == pkg:
                    found.append(f"from {target} import {a.name}")
        elif isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name == pkg]
    return found


def test_no_report_module_imports_its_own_package_back() -> None:
    offences = {p.name: own_package_imports(p.read_text(), f"pipeline.report.{p.stem}") for p in REPORT.glob("*.py")}
    assert {k: v for k, v in offences.items() if v} == {}
    assert len(offences) >= 10  # the split modules are all read
    # the reader is not vacuous: names from the package's __init__, by any spelling, are caught
    bad = ("from . import pct\nfrom .formats import pct\nfrom . import svg as S\nfrom pipeline import report\n"
           "import pipeline.report\nfrom pipeline.report import make_report\ndef f():\n    from .. import report\n")
    assert own_package_imports(bad, "pipeline.report.html") == [
        "from pipeline.report import pct", "from pipeline import report", "import pipeline.report",
        "from pipeline.report import make_report", "from pipeline import report"]


# ---------------------------------------------------------------- the committed example
EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "example-report" / "report.html"


def test_the_committed_example_report_renders() -> None:
    """docs/example-report/report.html, made by `make demo`: loads cleanly, not blank, every picture and plot."""
    if find_chromium() is None:
        pytest.skip(SKIP_REASON)
    try:
        with Chromium() as browser:
            page = browser.load(EXAMPLE, FACTS_JS)
    except BrowserError as e:
        pytest.skip(f"Chromium did not start here: {e}")
    assert page.errors == [], page.errors
    assert [u for u in page.requests if not u.startswith("data:image/png;base64,")] == [page.url]
    px = decode_png(page.screenshot)
    non_white = (px[..., :3] < 245).any(axis=2)
    assert px.shape[0] > 2400 and 0.04 < non_white.mean() < 0.6
    assert page.facts["svgs"] and all(s["marks"] > 0 for s in page.facts["svgs"])
    assert page.facts["images"] and all(i["ok"] and i["data"] for i in page.facts["images"])
    assert "fmnist_tiny" in page.facts["title"]
