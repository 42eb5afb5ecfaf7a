"""dvit validate: ONNX Runtime (CPU) against PyTorch on real Fashion-MNIST test images, tiny exported model."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_precision import make_tiny_export, tiny_model

from pipeline import precision, validate
from pipeline.comparison import metrics
from pipeline.errors import DvitError

LIMIT = 24  # 6 batches of 4 (and 24 B=1 runs for the consistency check)


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("val")
    export, ckpt = make_tiny_export(root)
    cache = root / "cache"
    fp16 = precision.build_precision(export, root / "fp16", "fp16", calib_size=16, cache_dir=cache)
    int8 = precision.build_precision(export, root / "int8", "int8", calib_size=16, cache_dir=cache, calib_method="max")
    return {"root": root, "export": export, "ckpt": ckpt, "fp16": fp16, "int8": int8}


def run(d: Path, **kw) -> dict:
    kw.setdefault("limit", LIMIT)
    kw.setdefault("progress", False)
    kw.setdefault("threads", 1)
    return validate.validate(d, **kw)


def test_helpers() -> None:
    a = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    b = np.array([[4, 3, 2, 1], [5, 6, 0, 9]])
    assert metrics.kept_iou(a, b).tolist() == [1.0, 2 / 6]
    prev = np.array([[10, 11, 12, 13]])
    assert metrics.compose(prev, np.array([[3, 0]])).tolist() == [[13, 10]]
    assert metrics.compose(None, np.array([[3, 0]])).tolist() == [[3, 0]]
    tok = np.arange(3 * 2).reshape(1, 3, 2).astype(float)  # class token + patches with ids [7, 2]
    got, ref, n = metrics.aligned_rows(tok, np.array([[7, 2]]), tok[:, [0, 2, 1]], np.array([[2, 7]]))
    assert got[:, 0].tolist() == ref[:, 0].tolist() == [0, 4, 2] and n.tolist() == [3]  # class token, then by id
    e = metrics.ErrStats()
    e.update(np.ones((2, 3)), np.ones((2, 3)))
    assert e.to_dict() == {"max_abs": 0.0, "mean_abs": 0.0, "cosine_mean": 1.0, "cosine_min": 1.0}


def test_fp32_export_matches_pytorch_exactly(art: dict, tmp_path: Path) -> None:
    r = run(art["export"], batch_size=4)
    assert r["manifest"]["kind"] == "export" and r["precision"] == ["fp32"] * 4
    assert r["dataset"]["samples"] == LIMIT and r["dataset"]["split"] == "test"
    assert r["reference"]["matches_manifest"]
    for kind in ("chain", "fused"):
        assert r[kind]["agreement"] == 1.0
        assert r[kind]["accuracy"] == r["reference"]["accuracy"]
        assert r[kind]["logits"]["max_abs"] < 1e-4
        assert all(k["iou_mean"] == 1.0 and k["identical"] == 1.0 for k in r[kind]["kept"])
    assert all(k["identical"] == 1.0 for k in r["chain"]["kept_isolated"])
    for b in r["chain"]["boundaries"]:
        assert b["chained"]["max_abs"] < 1e-4 and b["chained"]["cosine_min"] > 0.99999
        assert b["chained"]["tokens_fraction"] == b["isolated"]["tokens_fraction"] == 1.0  # the same tokens kept
    assert r["chain_vs_fused"]["logits_max_abs"] < 1e-5 and r["chain_vs_fused"]["kept_identical"] == [1.0] * 3
    bc = r["batch_consistency"]
    assert bc["batch_sizes"] == [4, 1] and bc["samples"] == LIMIT
    assert bc["chain"]["logits_max_abs"] < 1e-4 and bc["fused"]["kept_identical"] == [1.0] * 3
    req = r["requirements"]
    assert req["profile"] == "fp32" and req["passed"] and not req["enforced"]
    json.dumps(r)  # serialisable as is


def test_fp16_and_int8_are_close_but_not_exact(art: dict) -> None:
    r16 = run(art["fp16"], batch_size=4, consistency_samples=0)
    assert r16["precision"] == ["fp16"] * 4 and r16["requirements"]["profile"] == "fp16"
    assert r16["batch_consistency"] is None
    assert 0 < r16["chain"]["logits"]["max_abs"] < 0.1
    assert min(k["iou_mean"] for k in r16["chain"]["kept"]) > 0.9
    assert all(k["iou_mean"] == 1.0 for k in r16["chain"]["kept_isolated"][:1])
    for b in r16["chain"]["boundaries"]:  # tokens paired by patch position: FP16 rounding only
        assert b["chained"]["cosine_min"] > 0.999 and b["chained"]["tokens_compared"] >= LIMIT
    r8 = run(art["int8"], batch_size=4, consistency_samples=0)
    assert r8["requirements"]["profile"] == "int8"
    assert 0 < r8["fused"]["logits"]["max_abs"] < 1.0
    # the fused graph has the chain's Q/DQ placement and scales: it reproduces the chain
    assert r8["chain_vs_fused"]["logits_max_abs"] < 1e-4 and r8["chain_vs_fused"]["agreement"] == 1.0


def test_cli_json_table_and_require(art: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    out = tmp_path / "v.json"
    rc = main(["validate", "--graphs", str(art["export"]), "--limit", "8", "--batch-size", "4",
               "--json", str(out), "--require", "fp32", "--threads", "1"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "Kept tokens" in text and "stage chain" in text and "FP32 thresholds (enforced)" in text
    r = validate.load_result(out)
    assert r["format"] == validate.FORMAT and r["requirements"]["enforced"] and r["requirements"]["passed"]
    # INT8 graphs held to FP32 thresholds fail with exit code 1 and name what failed
    rc = main(["validate", "--graphs", str(art["int8"]), "--limit", "8", "--require", "fp32",
               "--consistency-samples", "0"])
    err = capsys.readouterr().err
    assert rc == 1 and "fp32 requirements not met" in err and "logits max abs error" in err


def test_checkpoint_hash_checked(art: dict, tmp_path: Path) -> None:
    copy = tmp_path / "export"
    shutil.copytree(art["export"], copy)
    ck = tmp_path / "student.pt"
    shutil.copyfile(art["ckpt"], ck)
    m = json.loads((copy / "manifest.json").read_text())
    m["checkpoint"]["path"] = str(ck)
    (copy / "manifest.json").write_text(json.dumps(m))
    with open(ck, "ab") as f:
        f.write(b"\0")  # changed after export
    with pytest.raises(DvitError, match="does not match the hash in the manifest"):
        run(copy)
    # an explicit checkpoint is compared against, and flagged as not the manifest's
    from pipeline.checkpoint import save_checkpoint

    other = tmp_path / "other.pt"
    save_checkpoint(other, tiny_model(seed=5))
    r = run(copy, checkpoint=str(other), limit=8, consistency_samples=0)
    assert not r["reference"]["matches_manifest"]
    assert r["chain"]["logits"]["max_abs"] > 1e-3


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"batch_size": 8}, "no graphs for batch size 8"),
        ({"limit": 0}, "--limit 0 is not positive"),
        ({"providers": "tpu"}, "unknown provider"),
        ({"require": "int4"}, "unknown --require"),
        ({"threads": 0}, "--threads 0 is not positive"),
    ],
)
def test_bad_input(art: dict, kw: dict, match: str) -> None:
    with pytest.raises(DvitError, match=match):
        run(art["export"], **kw)


def test_not_a_graphs_dir(tmp_path: Path) -> None:
    with pytest.raises(DvitError, match="no manifest.json"):
        run(tmp_path)
    from pipeline.manifest import write_manifest

    write_manifest(tmp_path, "train", {"files": []})
    with pytest.raises(DvitError, match="'train' manifest"):
        run(tmp_path)
