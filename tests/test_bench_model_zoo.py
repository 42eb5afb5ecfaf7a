"""benchmarks/bench_model_zoo.py without timing anything that matters: the GMAC counter against multiply-adds
derived by hand (token pruning and spatial sparsification), the Markdown table writer on a made-up result, and
--quick runs of one reduced model of each kind with one run whose files are checked for their fields (never their
timings: speed belongs to `make bench`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from script_module import load_script

from pipeline.config import ModelConfig
from pipeline.spatial.config import OFFICIAL_SPATIAL, SpatialConfig

REPO = Path(__file__).resolve().parents[1]


def _bench() -> Any:
    return load_script("benchmarks/bench_model_zoo.py")


def predictor_macs(cfg: ModelConfig) -> int:
    """The prediction modules at inference: before pruning stage s the module scores the n = T_{s-1} - 1 patch
    tokens present (T: tokens per stage, class token included) with in_conv Linear(C, C), then out_conv Linear(C,
    C/2), Linear(C/2, C/4), Linear(C/4, 2): n (C^2 + C^2/2 + C^2/8 + C/2) multiply-adds. (The global feature is a
    mean: no multiply-add is counted for it.)"""
    C = cfg.embed_dim
    per_token = C * C + C * (C // 2) + (C // 2) * (C // 4) + (C // 4) * 2
    return sum((t - 1) * per_token for t in cfg.tokens_per_stage[:-1])


def analytic_macs(cfg: ModelConfig) -> int:
    """Multiply-adds of one image's inference pass, matrix products and convolutions only (what FlopCounterMode
    counts, halved). N patches, C width, hidden MLP width h = int(C * mlp_ratio), P patch size, K classes.

    Stem. DeiT: one PxP stride-P convolution, C x (in_chans P^2) per patch: N C in_chans P^2. LV-ViT ('4_2'): at
    half resolution (img/2)^2 positions, a 7x7 stride-2 convolution in_chans -> 64 and two 3x3 ones 64 -> 64:
    (img/2)^2 * 64 * (49 in_chans + 2 * 9 * 64); then the (P/2)x(P/2) stride-P/2 projection 64 -> C: N C 64 (P/2)^2.
    Block on T tokens: qkv T C 3C, attention scores (all heads) T T C, attention-weighted values T T C, proj T C C,
    MLP 2 T C h: T (4 C^2 + 2 C h) + 2 T^2 C. A stage of the pruned model runs its blocks on its T tokens (the
    dense model: every block on N + 1). Prediction modules: predictor_macs. Head: the class token, C K; LV-ViT's
    auxiliary head also on every patch token of the last stage: (T_last - 1) C K."""
    C, P, K, N = cfg.embed_dim, cfg.patch_size, cfg.num_classes, cfg.num_patches
    h = int(C * cfg.mlp_ratio)
    if cfg.family == "deit":
        stem = N * C * cfg.in_chans * P * P
    else:
        stem = (cfg.img_size // 2) ** 2 * 64 * (49 * cfg.in_chans + 2 * 9 * 64) + N * C * 64 * (P // 2) ** 2
    edges = [0, *cfg.pruning_loc, cfg.depth]
    blocks = sum((end - start) * (t * (4 * C * C + 2 * C * h) + 2 * t * t * C)
                 for t, start, end in zip(cfg.tokens_per_stage, edges, edges[1:]))
    head = C * K + ((cfg.tokens_per_stage[-1] - 1) * C * K if cfg.family == "lvvit" else 0)
    return stem + blocks + predictor_macs(cfg) + head


def spatial_predictor_macs(cfg: SpatialConfig) -> int:
    """The prediction modules of DynamicCNN (1x1 convolutions) and DynamicSwin (Linear layers) alike: each scores
    every one of the N positions of the third stage's map, C channels, with C -> C, C -> C/2, C/2 -> C/4, C/4 -> 2:
    N (C^2 + C C/2 + C/2 C/4 + C/4 2) per location. (The global feature is a mean: no multiply-add.)"""
    C, N = cfg.dims[2], cfg.positions
    return len(cfg.pruning_loc) * N * (C * C + C * (C // 2) + (C // 2) * (C // 4) + (C // 4) * 2)


def spatial_analytic_macs(cfg: SpatialConfig) -> int:
    """Multiply-adds of one image's inference pass of a DynamicCNN or DynamicSwin, matrix products and
    convolutions only. Stage i (0..3) has a side s_i = img / 4 / 2^i map of P_i = s_i^2 positions, C_i channels.

    Both: a 4x4 stride-4 stem convolution, P_0 C_0 in_chans 16; the head on the pooled features, C_3 K. A block's
    MLP (C -> 4C -> C) is 8 C^2 per position it runs on: all P, or, in the third stage from a pruning location on
    (each location's partition holds until the next one), the k slow positions of that location, the other P - k
    taking the fast path's one Linear, C^2 each. ConvNeXt: a block's depthwise 7x7 convolution runs on the whole
    map, 49 C P; the downsampling into stage i a 2x2 stride-2 convolution, P_i C_i C_{i-1} 4. Swin: a block's
    qkv and proj, 4 C^2 P, and attention on the whole map in windows of w = min(window, s_i): scores and weighted
    values, w^2 C per position each, 2 P w^2 C; the patch merging after stage i a Linear 4 C_i -> 2 C_i on the
    P_{i+1} positions. Prediction modules: spatial_predictor_macs."""
    side = [cfg.img_size // 4 // 2**i for i in range(4)]
    P, C = [s * s for s in side], cfg.dims
    locs = cfg.pruning_loc

    def slow_count(j: int) -> int | None:  # third-stage block j: None (dense) or its location's slow positions
        passed = [n for loc, n in zip(locs, cfg.keep_counts) if loc <= j]
        return passed[-1] if passed else None

    def mlp(i: int, slow: int | None) -> int:
        return P[i] * 8 * C[i] ** 2 if slow is None else slow * 8 * C[i] ** 2 + (P[i] - slow) * C[i] ** 2

    if cfg.family == "convnext":
        between = sum(P[i] * C[i] * C[i - 1] * 4 for i in (1, 2, 3))

        def mixing(i: int) -> int:
            return 49 * C[i] * P[i]
    else:
        between = sum(P[i + 1] * 4 * C[i] * 2 * C[i] for i in (0, 1, 2))

        def mixing(i: int) -> int:
            w = min(cfg.window_size, side[i])
            return 4 * C[i] ** 2 * P[i] + 2 * P[i] * w * w * C[i]

    blocks = sum(mixing(i) + mlp(i, slow_count(j) if i == 2 else None)
                 for i in range(4) for j in range(cfg.depths[i]))
    return P[0] * C[0] * cfg.in_chans * 16 + between + blocks + spatial_predictor_macs(cfg) + C[3] * cfg.num_classes


def test_model_names() -> None:
    bench = _bench()
    assert bench.SPATIAL_MODELS == OFFICIAL_SPATIAL
    assert bench.MODELS == bench.TOKEN_MODELS + bench.SPATIAL_MODELS and len(set(bench.MODELS)) == 11


@pytest.mark.parametrize("name", ["deit-256", "deit-s", "deit-b", "lvvit-s", "lvvit-m"])
def test_gmac_counter_matches_the_analytic_count(name: str) -> None:
    bench = _bench()
    cfg = bench.zoo_config(name, quick=True)  # 4 blocks on 64x64 images: pruning before blocks 1, 2, 3
    assert (cfg.depth, cfg.img_size, cfg.pruning_loc, cfg.keep_ratio) == (4, 64, (1, 2, 3), 0.7)
    student, dense = bench.build_pair(cfg)
    assert bench.count_gmacs(student) * 1e9 == pytest.approx(analytic_macs(cfg), rel=1e-12, abs=0)
    assert bench.count_gmacs(dense) * 1e9 == pytest.approx(analytic_macs(cfg.as_dense()), rel=1e-12, abs=0)
    assert bench.predictor_gmacs(student) * 1e9 == pytest.approx(predictor_macs(cfg), rel=1e-12, abs=0)
    assert bench.predictor_gmacs(dense) == 0
    # the dense teacher is the student without its prediction modules, with the student's backbone weights
    assert bench.count_params(student) - bench.count_params(dense) == sum(
        p.numel() for p in student.score_predictor.parameters())


def test_gmac_counter_full_deit_s() -> None:
    """One full 224x224 configuration, counted (one image, batch 1: cheap): the formula holds at full size too."""
    bench = _bench()
    cfg = bench.zoo_config("deit-s")
    assert cfg.tokens_per_stage == [197, 138, 97, 68]
    student, dense = bench.build_pair(cfg)
    assert bench.count_gmacs(student) * 1e9 == pytest.approx(analytic_macs(cfg), rel=1e-12, abs=0)
    assert bench.count_gmacs(dense) * 1e9 == pytest.approx(analytic_macs(cfg.as_dense()), rel=1e-12, abs=0)


def test_analytic_count_is_near_the_quoted_figures() -> None:
    """The official README quotes GMACs to 0.1 G; the full configurations are within 0.1 G of each (a changed
    preset, keep count or pruning point would not be). The benchmark reports the exact differences."""
    bench = _bench()
    assert set(bench.QUOTED_GMACS) <= set(bench.MODELS)
    for name, quoted in bench.QUOTED_GMACS.items():
        cfg = bench.zoo_config(name)
        count = spatial_analytic_macs if bench.is_spatial(name) else analytic_macs
        mine = {"pruned": count(cfg) / 1e9, "dense": count(cfg.as_dense()) / 1e9}
        for key, q in quoted.items():
            assert abs(mine[key] - q) <= 0.1, (name, key, mine[key], q)
    # every DynamicCNN / DynamicSwin row of the README's table is carried (it quotes no dense figure for them)
    assert {n: set(q) for n, q in bench.QUOTED_GMACS.items() if bench.is_spatial(n)} == {
        n: {"pruned"} for n in OFFICIAL_SPATIAL}


@pytest.mark.parametrize("name", OFFICIAL_SPATIAL)
def test_spatial_gmac_counter_matches_the_analytic_count(name: str) -> None:
    """The reduced spatial configurations (--quick), counted: the depthwise convolution or the windowed attention
    on the whole map, the slow path's MLP on the kept positions only, the fast path on the others."""
    bench = _bench()
    cfg = bench.zoo_config(name, quick=True)
    full = bench.zoo_config(name)
    assert isinstance(cfg, SpatialConfig) and (cfg.family, cfg.dims, cfg.num_heads) == (
        full.family, full.dims, full.num_heads)  # the official widths and heads
    assert (cfg.depths, cfg.img_size, cfg.pruning_loc, cfg.keep_ratio) == ((1, 1, 4, 1), 128, (1, 2, 3), 0.7)
    assert cfg.window_size == (4 if cfg.family == "swin" else full.window_size)
    assert cfg.keep_counts == [44, 31, 19] and cfg.positions == 64
    student, dense = bench.build_pair(cfg)
    pruned_macs, dense_macs = spatial_analytic_macs(cfg), spatial_analytic_macs(cfg.as_dense())
    assert bench.count_gmacs(student) * 1e9 == pytest.approx(pruned_macs, rel=1e-12, abs=0)
    assert bench.count_gmacs(dense) * 1e9 == pytest.approx(dense_macs, rel=1e-12, abs=0)
    assert pruned_macs < dense_macs
    assert bench.predictor_gmacs(student) * 1e9 == pytest.approx(spatial_predictor_macs(cfg), rel=1e-12, abs=0)
    assert bench.predictor_gmacs(dense) == 0
    # the dense teacher holds the student's backbone tensors; the student adds predictors and fast paths
    sd, dense_sd = student.state_dict(), dense.state_dict()
    assert set(dense_sd) < set(sd) and all(torch.equal(sd[k], v) for k, v in dense_sd.items())
    extra = {k for k in sd if k not in dense_sd}
    assert any("predictor" in k for k in extra) and any("fast" in k for k in extra)
    assert bench.count_params(student) - bench.count_params(dense) == sum(sd[k].numel() for k in extra)


@pytest.mark.parametrize("name", ["convnext-t", "swin-t"])
def test_spatial_gmac_counter_full_size(name: str) -> None:
    """One full 224x224 configuration per family, counted (one image, batch 1: a few seconds)."""
    bench = _bench()
    cfg = bench.zoo_config(name)
    assert cfg.keep_counts == [137, 97, 58] and cfg.positions == 196 and cfg.img_size == 224
    student, dense = bench.build_pair(cfg)
    assert bench.count_gmacs(student) * 1e9 == pytest.approx(spatial_analytic_macs(cfg), rel=1e-12, abs=0)
    assert bench.count_gmacs(dense) * 1e9 == pytest.approx(spatial_analytic_macs(cfg.as_dense()), rel=1e-12, abs=0)


def _made_up_result(bench: Any) -> dict[str, Any]:
    def ort(ratio: float, pruned: float, noisy: bool) -> dict[str, Any]:
        return {"runs": 3, "ratio": ratio, "pruned_p50_ms": pruned, "dense_p50_ms": pruned / ratio, "noisy": noisy}

    spatial = _spatial_row({"1": ort(0.9, 45.0, False), "32": ort(0.8, 1200.0, False)})

    def model(name: str, family: str, quoted: dict[str, float] | None, runs: dict[str, Any]) -> dict[str, Any]:
        g = {"dense": 4.598882304, "pruned": 2.980897728, "prediction_modules": 0.102, "ratio": 0.648}
        diff = {k: {"gmacs": g[k] - q, "percent": 100 * (g[k] - q) / q} for k, q in (quoted or {}).items()} or None
        return {"name": name, "family_name": family, "tokens_per_stage": [197, 138, 97, 68], "params": 22_774_414,
                "params_dense": 22_050_664, "gmacs": g, "quoted_gmacs": quoted, "gmacs_diff": diff,
                "model_config": {"img_size": 224}, "ort": runs}

    return {
        "format": bench.FORMAT, "quick": False, "keep_ratio": 0.7, "command": "bench_model_zoo.py --runs 3",
        "date": "2026-01-01T00:00:00+00:00",
        "machine": {"cpu": "Test CPU 9000", "cores": 2, "python": "3.11.7", "load_average": [0.5, 0.4, 0.3],
                    "versions": {"onnxruntime": "1.24.4", "torch": "2.14.0"}},
        "settings": {"batch_sizes": [1, 32], "runs": 3, "threads": 2, "pool": "global", "pinned_cpus": [0, 1]},
        "models": [model("deit-s", "DeiT", {"pruned": 2.9, "dense": 4.6},
                         {"1": ort(0.735, 20.66, False), "32": ort(0.6366, 624.04, True)}),
                   model("lvvit-m", "LV-ViT", None, {"1": ort(0.7, 30.0, False)}),
                   spatial],
    }


def _spatial_row(ort: dict[str, Any]) -> dict[str, Any]:
    """convnext-t as measure_model writes it (counted figures of the real configuration)."""
    g = {"dense": 4.455531264, "pruned": 3.578797056, "prediction_modules": 0.141006848, "ratio": 0.8032}
    q = {"pruned": 3.6}
    return {"name": "convnext-t", "family": "convnext", "family_name": "ConvNeXt", "sparsification": "spatial",
            "tokens_per_stage": [196, 196, 196, 196], "keep_counts": [137, 97, 58], "map_positions": 196,
            "params": 29_759_782, "params_dense": 28_589_128, "gmacs": g, "quoted_gmacs": q,
            "gmacs_diff": {"pruned": {"gmacs": g["pruned"] - 3.6, "percent": 100 * (g["pruned"] - 3.6) / 3.6}},
            "model_config": {"img_size": 224, "family": "convnext"}, "ort": ort}


def test_markdown_table() -> None:
    bench = _bench()
    md = bench.markdown_table(_made_up_result(bench))
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| model | family"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols == ["model", "family", "tokens per stage", "params (M) pruned / dense", "dense GMACs (multiply-adds)",
                    "pruned GMACs (multiply-adds)", "ORT pruned/dense b1 (p50 ms)", "ORT pruned/dense b32 (p50 ms)"]
    rows = [line for line in lines if line.startswith("| `")]
    deit = [c.strip() for c in rows[0].strip("|").split("|")]
    assert deit == ["`deit-s`", "DeiT", "197 → 138 → 97 → 68", "22.77 / 22.05", "4.60", "2.98",
                    "0.73 (20.7 / 28.1 ms)", "0.64 † (624.0 / 980.3 ms)"]
    lvvit = [c.strip() for c in rows[1].strip("|").split("|")]
    assert lvvit[1] == "LV-ViT" and lvvit[-1] == "—"  # no batch-32 figure: a dash, not a made-up number
    # the comparison with the quoted figures: only the model that has them
    assert "| `deit-s` | 4.599 | 4.6 | -0.00 (-0.0%) | 2.981 | 2.9 | +0.08 (+2.8%) | 0.102 |" in md
    assert sum(line.startswith("| `lvvit-m`") for line in lines) == 1
    # what is counted and how it was timed, the command and the machine
    assert "multiply-adds" in md and "FlopCounterMode" in md and "counted FLOPs / 2" in md
    assert "softmax" in md and "LayerNorm" in md and "GELU" in md
    assert "ONNX Runtime 1.24.4" in md and "2 intra-op thread(s)" in md and "3 runs" in md
    assert "Command: `bench_model_zoo.py --runs 3`" in md
    assert "Test CPU 9000, 2 cores" in md and "2026-01-01" in md
    assert "REDUCED" not in md
    # the spatial row: its own table, slow-path positions per location instead of tokens per stage
    heads = [line for line in lines if line.startswith("| model | family")]
    assert len(heads) == 2 and heads[1] == header.replace(
        "tokens per stage", "slow-path positions per location (of the third stage's map)")
    assert lines.index(heads[1]) > lines.index(rows[1])  # after the token-pruning rows
    convnext = [c.strip() for c in rows[2].strip("|").split("|")]
    assert convnext == ["`convnext-t`", "ConvNeXt", "137 / 97 / 58 of 196", "29.76 / 28.59", "4.46", "3.58",
                        "0.90 (45.0 / 50.0 ms)", "0.80 (1200.0 / 1500.0 ms)"]
    assert "196 → 196" not in md  # no token count for a map that keeps its shape
    assert "removes no token" in md and "slow path" in md and "fast path" in md and "depthwise" in md
    assert "224x224 images" in md and "Tokens per stage include the class token." in md
    assert "| `convnext-t` | 4.456 | — | — | 3.579 | 3.6 | -0.02 (-0.6%) | 0.141 |" in md
    assert "raoyongming/DynamicViT at 1322e62" in md


def test_markdown_table_spatial_only() -> None:
    """A run of spatial names alone (--models convnext-t): one table, no token wording."""
    bench = _bench()
    result = _made_up_result(bench)
    result["models"] = [_spatial_row({})]
    md = bench.markdown_table(result)
    assert sum(line.startswith("| model | family") for line in md.splitlines()) == 1
    assert "tokens per stage" not in md and "Tokens per stage" not in md
    assert "| `convnext-t` | ConvNeXt | 137 / 97 / 58 of 196 | 29.76 / 28.59 | 4.46 | 3.58 | — | — |" in md


def test_quick_run_writes_the_files(tmp_path: Path) -> None:
    bench = _bench()
    out = tmp_path / "out"
    rc = bench.main(["--quick", "--models", "deit-256", "--runs", "1", "--threads", "1", "--warmup-s", "0",
                     "--work", str(tmp_path / "work"), "--out", str(out)])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["model_zoo_quick.json", "model_zoo_quick.md"]
    r = json.loads((out / "model_zoo_quick.json").read_text())
    assert r["format"] == bench.FORMAT and r["quick"] is True and r["keep_ratio"] == 0.7
    assert {"cpu", "cores", "versions", "load_average"} <= set(r["machine"])
    assert {"onnxruntime", "torch"} <= set(r["machine"]["versions"])
    assert r["date"] and "--quick" in r["command"]
    s = r["settings"]
    assert s["batch_sizes"] == [1] and s["runs"] == 1 and s["threads"] == 1 and s["reduced"] == bench.QUICK
    [m] = r["models"]
    assert m["name"] == "deit-256" and m["family"] == "deit" and m["keep_ratio"] == 0.7
    assert m["tokens_per_stage"] == [17, 12, 8, 6] and m["keep_counts"] == [11, 7, 5]
    assert m["model_config"]["depth"] == 4 and m["model_config"]["img_size"] == 64
    assert m["params"] > m["params_dense"] > 0
    cfg = ModelConfig.from_dict(m["model_config"])
    assert m["gmacs"]["pruned"] * 1e9 == pytest.approx(analytic_macs(cfg), rel=1e-12, abs=0)
    assert m["gmacs"]["dense"] * 1e9 == pytest.approx(analytic_macs(cfg.as_dense()), rel=1e-12, abs=0)
    assert m["quoted_gmacs"] is None and m["gmacs_diff"] is None  # reduced: nothing quoted to compare with
    assert m["graphs"] == str(tmp_path / "work" / "deit-256-quick" / "graphs")
    t = m["ort"]["1"]
    assert t["runs"] == 1 and len(t["samples_ms"]["pruned"]) == len(t["samples_ms"]["dense"]) == 1
    assert {"pruned_p50_ms", "dense_p50_ms", "ratio", "noisy", "pruned", "dense"} <= set(t)
    assert all(isinstance(t[k], float) for k in ("pruned_p50_ms", "dense_p50_ms", "ratio"))
    md = (out / "model_zoo_quick.md").read_text()
    assert "REDUCED" in md and "| `deit-256` | DeiT | 17 → 12 → 8 → 6 |" in md and "ORT pruned/dense b1" in md


def test_quick_run_spatial(tmp_path: Path) -> None:
    """A reduced DynamicSwin through the same path: counted, exported with its teacher, timed once."""
    bench = _bench()
    out = tmp_path / "out"
    rc = bench.main(["--quick", "--models", "swin-t", "--runs", "1", "--threads", "1", "--warmup-s", "0",
                     "--work", str(tmp_path / "work"), "--out", str(out)])
    assert rc == 0
    r = json.loads((out / "model_zoo_quick.json").read_text())
    assert r["quick"] is True and r["settings"]["reduced_spatial"] == {**bench.QUICK_SPATIAL, "swin_window_size": 4}
    [m] = r["models"]
    cfg = SpatialConfig.from_dict(m["model_config"])
    assert cfg == bench.zoo_config("swin-t", quick=True)
    assert m["name"] == "swin-t" and m["family"] == "swin" and m["sparsification"] == "spatial"
    assert m["keep_counts"] == cfg.keep_counts == [44, 31, 19] and m["map_positions"] == 64
    assert m["tokens_per_stage"] == [64] * 4  # the static map of every stage graph
    assert m["params"] > m["params_dense"] > 0
    assert m["gmacs"]["pruned"] * 1e9 == pytest.approx(spatial_analytic_macs(cfg), rel=1e-12, abs=0)
    assert m["gmacs"]["dense"] * 1e9 == pytest.approx(spatial_analytic_macs(cfg.as_dense()), rel=1e-12, abs=0)
    assert m["gmacs"]["prediction_modules"] > 0 and m["gmacs"]["ratio"] < 1
    assert m["quoted_gmacs"] is None and m["gmacs_diff"] is None
    assert m["graphs"] == str(tmp_path / "work" / "swin-t-quick" / "graphs")
    t = m["ort"]["1"]
    assert t["runs"] == 1 and all(isinstance(t[k], float) for k in ("pruned_p50_ms", "dense_p50_ms", "ratio"))
    md = (out / "model_zoo_quick.md").read_text()
    assert "REDUCED" in md and "| `swin-t` | Swin | 44 / 31 / 19 of 64 |" in md and "128x128 images" in md
    assert "tokens per stage" not in md


def test_unknown_model_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        _bench().main(["--quick", "--models", "swin-t,convnext-x"])
    assert e.value.code == 2 and "convnext-t" in capsys.readouterr().err
