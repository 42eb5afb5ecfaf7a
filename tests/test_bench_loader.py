"""benchmarks/bench_loader.py, quick: real JPEGs through the streamed loader, both recipes, 0 and 1 workers; the
JSON is complete. No speed threshold is asserted: figures belong to `make bench`."""
from __future__ import annotations

import json
from pathlib import Path

from script_module import load_script

REPO = Path(__file__).resolve().parents[1]


def test_loader_bench_json(tmp_path: Path) -> None:
    bench = load_script("benchmarks/bench_loader.py")
    out = tmp_path / "loader.json"
    assert bench.main(["--quick", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["format"] == bench.FORMAT and r["images"] == 96
    assert sorted((run["recipe"], run["workers"]) for run in r["runs"]) == [("deit", 0), ("deit", 1), ("small", 0), ("small", 1)]
    for run in r["runs"]:
        assert run["images"] == (96 // 16 - 1) * 16 and run["images_per_second"] > 0  # the first batch is not timed
