"""benchmarks/bench_tradeoff.py on the embedded default's architecture (fmnist_tiny), two keep ratios, batch 1,
short durations: the JSON and the plots are complete and well formed. No timing threshold is asserted: speed
targets belong to `make bench`."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from script_module import load_script

REPO = Path(__file__).resolve().parents[1]


def test_tradeoff_json_and_plot(tmp_path: Path) -> None:
    bench = load_script("benchmarks/bench_tradeoff.py")
    rc = bench.main(["--model", "fmnist_tiny", "--ratios", "0.5,0.9", "--batch-sizes", "1", "--threads", "1",
                     "--warmup-s", "0.05", "--duration-s", "0.1", "--min-iters", "2", "--work", str(tmp_path / "w"),
                     "--out", str(tmp_path / "out")])
    assert rc == 0
    [js] = list((tmp_path / "out").glob("tradeoff_fmnist_tiny_*.json"))
    r = json.loads(js.read_text())
    assert r["format"] == bench.FORMAT and r["latency"]["format"] == "dvit-edge/latency/v1"
    rows = {row["keep_ratio"]: row for row in r["rows"]}
    assert sorted(rows) == [0.5, 0.9] and all(row["batch"] == 1 for row in rows.values())
    for row in rows.values():
        assert all(row[k] > 0 for k in ("dense_ms", "fused_ms", "chain_ms"))
    # fewer tokens kept, fewer FLOPs: the limit falls with the keep ratio
    assert 0 < rows[0.5]["flops_ratio"] < rows[0.9]["flops_ratio"] < 1
    [svg] = list((tmp_path / "out").glob("tradeoff_fmnist_tiny_*_b1.svg"))
    root = ET.fromstring(svg.read_text())
    text = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
    for label in ("fused / dense", "chain / dense", "FLOPs ratio (the limit)"):
        assert label in text
    # an export made once is reused by the next run
    before = {p: p.stat().st_mtime for p in (tmp_path / "w").rglob("manifest.json")}
    bench.export_sets("fmnist_tiny", [0.5, 0.9], (1,), tmp_path / "w" / "fmnist_tiny")
    assert {p: p.stat().st_mtime for p in (tmp_path / "w").rglob("manifest.json")} == before
