"""benchmarks/bench_token_pruning.py end to end on tiny runs: two seeds of mask, delete and the middle way
(delete-after-1) through real `dvit train` runs on Fashion-MNIST subsets. The summary must pair each run with the
mask run of its seed, weigh the middle way's FLOPs by its masked epochs, and measure the IoU on real decisions. No
accuracy or speed is asserted: those belong to `make bench`."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from script_module import load_script

REPO = Path(__file__).resolve().parents[1]


def test_three_modes_two_seeds_summed_up_from_real_runs(tmp_path: Path) -> None:
    bench = load_script("benchmarks/bench_token_pruning.py")
    modes = ["mask", "delete", "delete-after-1"]
    rc = bench.main(["--part", "embedded", "--seeds", "0,1", "--modes", ",".join(modes), "--epochs", "2",
                     "--train-args", "--train-subset 256 --eval-subset 500 --threads 1",
                     "--work", str(tmp_path / "w"), "--out", str(tmp_path / "out")])
    assert rc == 0
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["format"] == bench.FORMAT
    emb = result["embedded"]
    runs = {(r["seed"], r["mode"]): r for r in emb["runs"]}
    assert set(runs) == {(s, m) for s in (0, 1) for m in modes}

    for (seed, mode), r in runs.items():  # each figure is the run's own, read back from what dvit train wrote
        out = tmp_path / "w" / f"{mode}-seed{seed}"
        epochs = [m for m in json.loads((out / "metrics.json").read_text()) if "epoch" in m]
        assert len(epochs) == 2 and r["test_top1"] == epochs[-1]["test_top1"]
        saved = torch.load(out / "model.pt", map_location="cpu", weights_only=False)["train_config"]
        assert (saved["token_pruning"], saved["mask_epochs"]) == {
            "mask": ("mask", 0), "delete": ("delete", 0), "delete-after-1": ("delete", 1)}[mode]
        if mode != "mask":
            assert len(r["kept_iou_vs_mask"]) == 3 and all(0.0 <= v <= 1.0 for v in r["kept_iou_vs_mask"])

    flops = emb["training_flops_per_image"]
    assert 0 < flops["delete"] < flops["mask"]
    summary = {m["mode"]: m for m in emb["summary"]}
    assert summary["delete-after-1"]["training_flops_per_image"] == round((flops["mask"] + flops["delete"]) / 2)
    for mode in ("delete", "delete-after-1"):
        paired = [round(runs[(s, mode)]["test_top1"] - runs[(s, "mask")]["test_top1"], 2) for s in (0, 1)]
        assert summary[mode]["vs_mask_paired"] == paired
    assert summary["mask"]["vs_mask_paired"] is None and summary["mask"]["top1_sd"] is not None
    assert len(emb["mask_cross_seed_iou"]) == 3

    md = (tmp_path / "out.md").read_text()
    for mode in modes:
        assert f"| {mode} | 0, 1 |" in md
    assert "--train-subset 256" in md and "epochs overridden to 2" in md
