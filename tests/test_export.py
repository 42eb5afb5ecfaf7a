"""`dvit export`: a tiny DynamicViT exported end to end, checked against PyTorch, and refused on bad input."""
from __future__ import annotations

import collections
import functools
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from tiny_models import TINY, trained_like

from pipeline import cli, export, onnx_utils, opscan
from pipeline.backend.onnxruntime.runner import OnnxRuntimeRunner
from pipeline.backend.onnxruntime.runner import run as run_onnx
from pipeline.checkpoint import save_checkpoint
from pipeline.data import load_fashion_mnist
from pipeline.errors import CheckpointError, ConfigError, DvitError, ManifestError
from pipeline.graphset import GraphSet
from pipeline.image_index import folder_split
from pipeline.manifest import read_manifest
from pipeline.model import DynamicViT, select_tokens


def tiny_student(seed: int = 0) -> DynamicViT:
    torch.manual_seed(seed)
    return trained_like(DynamicViT(TINY))


def decisive_images(n: int, model: DynamicViT | None = None) -> np.ndarray:
    """n Fashion-MNIST test images on which PyTorch's keep decisions have a margin: at every pruning stage the
    top k+1 keep scores are at least 1e-5 apart. Kept indices are then decided by the model, not by float
    rounding, and ONNX Runtime must reproduce them exactly."""
    model = model or tiny_student()
    ds = load_fashion_mnist("test")
    pool = ds.normalize(ds.images[:256])
    ok = torch.ones(len(pool), dtype=torch.bool)
    with torch.no_grad():
        x = model.embed(pool)
        for s, (start, end) in enumerate(model.stage_bounds()):
            if s:
                k = model.cfg.keep_counts[s - 1]
                scores = model.keep_scores(s, x)
                top = scores.sort(dim=1, descending=True).values[:, : k + 1]
                ok &= (top[:, :-1] - top[:, 1:]).min(dim=1).values >= 1e-5
                x, _ = select_tokens(x, scores, k)
            x = model.run_blocks(x, start, end)
    idx = torch.nonzero(ok).flatten()
    assert len(idx) >= n, f"only {len(idx)} decisive test images"
    return pool[idx[:n]].numpy()


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ckpt")
    student = tiny_student()
    save_checkpoint(d / "student.pt", student)
    torch.manual_seed(1)
    save_checkpoint(d / "teacher.pt", trained_like(DynamicViT(TINY.as_dense())))
    return {"student": d / "student.pt", "teacher": d / "teacher.pt", "dir": d}


@pytest.fixture(scope="module")
def exported(ckpts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> export.ExportResult:
    out = tmp_path_factory.mktemp("export") / "out"
    return export.export(ckpts["student"], out, teacher=ckpts["teacher"], batch_sizes="1,8", progress=False)


def _ort(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return run_onnx(path, feeds)


# ---- layout, manifest, graph contracts ----
def test_layout_and_manifest(exported: export.ExportResult, ckpts: dict[str, Path]) -> None:
    m = read_manifest(exported.out, "export")
    assert m["model_config"] == TINY.to_dict()
    assert m["keep_ratio"] == 0.7 and m["keep_counts"] == [34, 24, 16] and m["tokens_per_stage"] == [50, 35, 25, 17]
    assert m["batch_sizes"] == [1, 8] and m["opset"] == export.DEFAULT_OPSET
    assert m["checkpoint"]["sha256"] and m["teacher_checkpoint"]["path"].endswith("teacher.pt")
    assert m["simplifier"]["name"] == "onnxsim" and m["simplifier"]["version"]
    assert set(m["graphs"]) == {"1", "8"}
    for b in (1, 8):
        g = m["graphs"][str(b)]
        assert [s["index"] for s in g["stages"]] == [0, 1, 2, 3]
        assert [s["blocks"] for s in g["stages"]] == [[0, 1], [1, 2], [2, 3], [3, 4]]
        assert [s["keep_count"] for s in g["stages"]] == [None, 34, 24, 16]
        for s in g["stages"]:
            assert (exported.out / s["file"]).is_file() and s["file"] == f"b{b}/stage{s['index']}.onnx"
        s0, s1, s3 = g["stages"][0], g["stages"][1], g["stages"][3]
        assert s0["inputs"] == [{"name": "images", "shape": [b, 1, 28, 28], "dtype": "float32"}]
        assert s0["outputs"] == [{"name": "tokens_1", "shape": [b, 50, 32], "dtype": "float32"}]
        assert s1["inputs"] == [{"name": "tokens_1", "shape": [b, 50, 32], "dtype": "float32"}]
        assert s1["outputs"] == [
            {"name": "tokens_2", "shape": [b, 35, 32], "dtype": "float32"},
            {"name": "kept_indices_1", "shape": [b, 34], "dtype": "int64"},
        ]
        assert s3["outputs"] == [
            {"name": "logits", "shape": [b, 10], "dtype": "float32"},
            {"name": "kept_indices_3", "shape": [b, 16], "dtype": "int64"},
        ]
        assert [o["name"] for o in g["fused"]["outputs"]] == ["logits", "kept_indices_1", "kept_indices_2", "kept_indices_3"]
        assert g["fused"]["stage_prefixes"] == {str(i): f"/stage{i}/" for i in range(4)}
        assert g["teacher"]["file"] == f"b{b}/teacher.onnx"
        assert g["teacher"]["outputs"] == [{"name": "logits", "shape": [b, 10], "dtype": "float32"}]
    # Which data verified the graphs: the checkpoint names none and the model takes Fashion-MNIST whole.
    v = m["verification"]["data_source"]
    assert v["source"].startswith("fashion-mnist:") and v["split"] == "test" and v["chosen_by"] == "default"
    assert v["images"] == 8 and v["decoded"] == 8 and "Fashion-MNIST" in v["why"]


def test_graphs_are_static_checked_and_scan_clean(exported: export.ExportResult) -> None:
    table = opscan.load_table()
    for rel in exported.graphs:
        model = onnx.load(str(exported.out / rel))
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
        assert onnx_utils.non_static_values(inferred) == [], rel
        assert opscan.scan_model(model, table, file=rel) == [], rel
        ops = {n.op_type for n in model.graph.node}
        assert not ops & {"ArgMax", "ArgSort", "NonZero", "Loop", "If"}, rel
        topks = [n for n in model.graph.node if n.op_type == "TopK"]
        if "stage0" in rel or "teacher" in rel:
            assert not topks
        for n in topks:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            assert attrs.get("sorted", 1) == 1 and attrs.get("largest", 1) == 1
            k = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}[n.input[1]]
            assert k.tolist() in ([34], [24], [16])


def test_onnxruntime_matches_pytorch(exported: export.ExportResult, ckpts: dict[str, Path]) -> None:
    images = decisive_images(8)
    model = export.load_student(ckpts["student"])
    teacher = export.load_teacher(ckpts["teacher"], TINY)
    with torch.no_grad():
        ref = model.forward_inference(torch.from_numpy(images))
        ref_teacher = teacher.forward_inference(torch.from_numpy(images)).logits.numpy()
    got = _ort(exported.out / "b8/fused.onnx", {"images": images})
    assert np.abs(got["logits"] - ref.logits.numpy()).max() < 1e-4
    for i, idx in enumerate(ref.kept_indices):
        assert np.array_equal(got[f"kept_indices_{i + 1}"], idx.numpy())
    assert np.abs(_ort(exported.out / "b8/teacher.onnx", {"images": images})["logits"] - ref_teacher).max() < 1e-4
    # The verification the export itself ran is recorded.
    for entry in exported.manifest["graphs"]["8"]["stages"]:
        v = entry["verification"]
        assert v["images"] >= 8 and v["max_abs_err"]
        if entry["index"] > 0:
            assert sum(v["kept_indices"][k] for k in ("identical", "near_tie_order", "near_tie_boundary")) == v["images"]
            assert v["kept_indices"]["max_tie_score_gap"] < export.SCORE_TIE_ATOL


def test_chained_stage_graphs_equal_fused(exported: export.ExportResult) -> None:
    images = decisive_images(8)
    x = {"images": images}
    kept = []
    for i in range(4):
        out = _ort(exported.out / f"b8/stage{i}.onnx", x)
        if i > 0:
            kept.append(out[f"kept_indices_{i}"])
        x = {f"tokens_{i + 1}": out[f"tokens_{i + 1}"]} if i < 3 else {}
    fused = _ort(exported.out / "b8/fused.onnx", {"images": images})
    np.testing.assert_allclose(out["logits"], fused["logits"], rtol=0, atol=1e-5)
    for i, k in enumerate(kept):
        assert np.array_equal(k, fused[f"kept_indices_{i + 1}"])


def test_batch8_per_sample_equals_batch1(exported: export.ExportResult) -> None:
    images = decisive_images(8)
    b8 = _ort(exported.out / "b8/fused.onnx", {"images": images})
    sess = OnnxRuntimeRunner(exported.out / "b1/fused.onnx")
    for j in range(8):
        b1 = sess.infer({"images": images[j : j + 1]})
        np.testing.assert_allclose(b1["logits"][0], b8["logits"][j], rtol=0, atol=1e-5)
        for i in range(1, 4):
            assert np.array_equal(b1[f"kept_indices_{i}"][0], b8[f"kept_indices_{i}"][j])


def _attributable(model: onnx.ModelProto) -> collections.Counter[int]:
    """Every compute node names exactly one stage: '/stageN/' first and no other stage further on."""
    per_stage: collections.Counter[int] = collections.Counter()
    for n in model.graph.node:
        if n.op_type in onnx_utils.NON_COMPUTE_OPS:
            continue
        s = onnx_utils.stage_of(n.name)
        assert s is not None, f"{n.name!r} ({n.op_type}) has no stage prefix"
        assert "/stage" not in n.name[len(f"/stage{s}/") :], n.name
        per_stage[s] += 1
    return per_stage


def test_fused_nodes_attributable_to_one_stage_before_and_after_simplification(exported: export.ExportResult) -> None:
    model = export.load_student(exported.manifest["checkpoint"]["path"])
    spec = next(s for s in export.plan_graphs(model, [1]) if s.kind == "fused")
    raw = export.trace(spec, export.DEFAULT_OPSET)
    simplified = onnx.load(str(exported.out / "b1/fused.onnx"))
    assert set(_attributable(raw)) == set(_attributable(simplified)) == {0, 1, 2, 3}
    # Each stage's nodes in the fused graph are exactly those of its own stage graph.
    for i in range(4):
        stage = onnx.load(str(exported.out / f"b1/stage{i}.onnx"))
        want = collections.Counter(n.op_type for n in stage.graph.node if n.op_type != "Constant")
        got = collections.Counter(
            n.op_type for n in simplified.graph.node if onnx_utils.stage_of(n.name) == i and n.op_type != "Constant"
        )
        assert got == want, i


def test_tampered_graph_is_refused(exported: export.ExportResult, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(exported.out, copy)
    read_manifest(copy, "export")
    f = copy / "b1/stage1.onnx"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="does not match the hash"):
        read_manifest(copy, "export")


def test_cli_keep_ratio_override_and_opset(ckpts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r05"
    argv = ["export", "--checkpoint", str(ckpts["student"]), "--keep-ratio", "0.5", "--batch-sizes", "2",
            "--opset", "18", "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    m = read_manifest(out, "export")
    assert m["keep_ratio"] == 0.5 and m["keep_counts"] == [24, 12, 6] and m["tokens_per_stage"] == [50, 25, 13, 7]
    assert m["model_config"]["keep_ratio"] == 0.5 and m["opset"] == 18 and m["teacher_checkpoint"] is None
    assert m["graphs"]["2"]["teacher"] is None
    assert onnx_utils.opset_of(onnx.load(str(out / "b2/fused.onnx"))) == 18
    assert m["graphs"]["2"]["stages"][3]["outputs"][1]["shape"] == [2, 6]
    assert "exported 5 graphs" in capsys.readouterr().out
    # An existing output is kept unless --overwrite is given.
    assert cli.main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_manifest_records_the_preprocessing(exported: export.ExportResult) -> None:
    """The header says how an image becomes the input: 1x28x28 grey, Fashion-MNIST's statistics and class names
    (the student records no data: the verification images' defaults), the in-memory eval path."""
    m = read_manifest(exported.out, "export")
    p = m["preprocessing"]
    assert p["input_size"] == [28, 28] and p["channels"] == 1 and p["color"] == "grey" and p["scale"] == "0-1"
    assert p["mean"] == [0.2860] and p["std"] == [0.3530] and p["classes"] == list(load_fashion_mnist("test").classes)
    assert p["resize"] == {"short_side": 28, "long_side": "round", "interpolation": "bilinear"}
    assert p["center_crop"] == {"size": [28, 28], "offset": "floor"}
    assert set(p["sources"]) == {"input_size", "channels", "resize", "mean", "std", "classes"}
    gs = GraphSet.load(exported.out)
    assert gs.preprocessing is not None and gs.preprocessing.to_dict() == p and gs.header()["preprocessing"] == p


def test_cli_says_what_the_images_are_turned_into(ckpts: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["export", "--checkpoint", str(ckpts["student"]), "--batch-sizes", "1", "--verify-images", "2",
            "--out", str(tmp_path / "o"), "--no-progress"]
    assert cli.main(argv) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("input: ")]
    assert len(lines) == 1
    assert "1x28x28, grey" in lines[0] and "mean 0.2860 std 0.3530" in lines[0]
    assert "10 classes (T-shirt/top, Trouser, Pullover, ...)" in lines[0]


# ---- bad input: one-line DvitError, nothing left behind ----
def _mismatched_checkpoint(src: Path, d: Path) -> Path:
    """A checkpoint whose stored config (embed_dim 64) does not match its weights (embed_dim 32)."""
    obj = torch.load(src, weights_only=False)
    obj["config"] = dict(obj["config"], embed_dim=64)
    torch.save(obj, d / "mismatch.pt")
    return d / "mismatch.pt"


@pytest.mark.parametrize(
    "case, error",
    [
        ("missing checkpoint", CheckpointError),
        ("corrupt checkpoint", CheckpointError),
        ("config mismatch", CheckpointError),
        ("batch size 0", DvitError),
        ("negative batch size", DvitError),
        ("keep ratio keeps zero tokens", ConfigError),
        ("unwritable output", DvitError),
        ("student as teacher", CheckpointError),
    ],
)
def test_bad_input_fails_cleanly(case: str, error: type[Exception], ckpts: dict[str, Path], tmp_path: Path) -> None:
    ckpt, kwargs = ckpts["student"], {}
    out = tmp_path / "out"
    if case == "missing checkpoint":
        ckpt = tmp_path / "nope.pt"
    elif case == "corrupt checkpoint":
        ckpt = tmp_path / "corrupt.pt"
        ckpt.write_bytes(b"\x80\x02 not a checkpoint")
    elif case == "config mismatch":
        ckpt = _mismatched_checkpoint(ckpts["student"], tmp_path)
    elif case == "batch size 0":
        kwargs["batch_sizes"] = "1,0"
    elif case == "negative batch size":
        kwargs["batch_sizes"] = "-8"
    elif case == "keep ratio keeps zero tokens":
        kwargs["keep_ratio"] = 0.1
    elif case == "unwritable output":
        (tmp_path / "a_file").write_text("x")
        out = tmp_path / "a_file" / "out"
    elif case == "student as teacher":
        kwargs["teacher"] = ckpts["student"]
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(error) as info:
        export.export(ckpt, out, progress=False, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temporary directory left over


def test_cli_reports_bad_input_in_one_line(ckpts: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["export", "--checkpoint", str(ckpts["student"]), "--batch-sizes", "0", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "batch size 0" in err and "--batch-sizes" in err
    assert not (tmp_path / "o").exists()


# ---- the tie-aware comparison of kept indices ----
def test_check_selection_accepts_only_near_ties() -> None:
    scores = [np.array([[0.9, 0.5, 0.5 + 1e-7, 0.1, -2.0]])]
    want = [np.array([[0, 2, 1]])]
    assert export.check_selection([want[0].copy()], want, scores, "g").status == ["identical"]
    # Near-tied tokens 1 and 2 in the other order: accepted, same kept set.
    c = export.check_selection([np.array([[0, 1, 2]])], want, scores, "g")
    assert c.status == ["tie-order"] and c.swaps == 2 and 0 < c.max_tie_gap < 1e-6
    # Token 3 kept instead of token 1 (scores 0.4 apart): a real difference.
    with pytest.raises(DvitError, match="pruning stage 1 differ"):
        export.check_selection([np.array([[0, 2, 3]])], want, scores, "g")
    # A near-tie at the keep boundary: different kept sets, later stages not compared.
    scores_b = [np.array([[0.9, 0.5, 0.1, 0.1 + 1e-7, -2.0]])]
    want_b = [np.array([[0, 1, 3]]), np.array([[2, 0]])]
    c = export.check_selection([np.array([[0, 1, 2]]), np.array([[0, 1]])], want_b, [*scores_b, np.zeros((1, 3))], "g")
    assert c.status == ["tie-set"]
    # Stage 2 indexes stage 1's kept tokens: an order swap at stage 1 is followed through token ids.
    two = [np.array([[0.9, 0.5, 0.5, 0.1]]), np.array([[0.3, 0.2, 0.1]])]
    want2 = [np.array([[0, 1, 2]]), np.array([[0, 1]])]  # stage 2 keeps tokens 0 and 1 (ids 0, 1)
    got2 = [np.array([[0, 2, 1]]), np.array([[0, 2]])]  # ORT: ids 0, 2, 1 -> its indices 0, 2 are ids 0, 1
    assert export.check_selection(got2, want2, two, "g").status == ["tie-order"]


# ---- which data verifies the graphs: --data decodes only the files it needs, and a misfit is refused ----
THREE = TINY.replace(num_classes=3)


def _image_folder(root: Path, per_class: int, classes: int = 3, size: int = 300, seed: int = 0) -> list[Path]:
    """Real JPEG files, `size` x `size` RGB, one folder per class: a class colour, a gradient and noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 60, size, dtype=np.float32)
    paths = []
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            img = 40.0 + 60 * c + ramp[None, :, None] + rng.normal(0, 25, (size, size, 3)).astype(np.float32)
            paths.append(root / f"c{c}" / f"{i:04d}.jpg")
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(paths[-1], quality=90)
    return paths


@pytest.fixture(scope="module")
def three_class(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 3-class 1x28x28 student (not Fashion-MNIST's 10) and a 300-image folder of 300x300 JPEGs for it."""
    d = tmp_path_factory.mktemp("three")
    torch.manual_seed(3)
    save_checkpoint(d / "three.pt", trained_like(DynamicViT(THREE)))
    _image_folder(d / "photos", per_class=100)
    return {"ckpt": d / "three.pt", "photos": d / "photos", "dir": d}


def test_data_folder_decodes_only_the_images_it_verifies_on(three_class: dict[str, Path], tmp_path: Path) -> None:
    """--data DIR lists the folder and decodes the few files it verifies on (the first of its test split), never the
    whole tree: with every other image made unreadable the export still runs, with the same figures. The manifest
    says which data verified the graphs."""
    photos = three_class["photos"]
    every = sorted(photos.rglob("*.jpg"))
    assert len(every) == 300
    run = functools.partial(export.export, three_class["ckpt"], tmp_path / "out", batch_sizes="1,2", data=str(photos),
                            verify_images=4, overwrite=True, progress=False)
    intact = run().manifest
    test_split = folder_split(photos, "test")  # the file index the export shares with training: lists, never decodes
    used = {test_split.path(i) for i in range(4)}
    for p in every:
        if p not in used:
            p.write_bytes(b"\xff\xd8 not a JPEG any more")
    m = run().manifest  # decoding any other file would fail: "cannot read image ..."
    for b in ("1", "2"):
        for x, y in zip(intact["graphs"][b]["stages"], m["graphs"][b]["stages"]):
            assert x["verification"] == y["verification"]
    v = m["verification"]["data_source"]
    assert v == intact["verification"]["data_source"]
    assert v["source"] == f"folder:{photos.resolve()}" and v["split"] == "test" and v["chosen_by"] == "--data"
    assert v["images"] == 4 and v["decoded"] == 4 and {photos / f for f in v["files"]} == used
    assert v["normalization"]["from"] == "these images" and len(v["normalization"]["mean"]) == 1
    assert str(photos.resolve()) in m["verification"]["data"]


def test_checkpoint_names_the_data_it_was_trained_on(three_class: dict[str, Path], tmp_path: Path) -> None:
    """Without --data, a checkpoint written by 'dvit train' is verified on the data it records, normalised as it
    was trained; recorded data that is not on this machine is refused, naming --data."""
    d = tmp_path / "photos"
    _image_folder(d, per_class=10, size=40, seed=1)  # 30 images: 3 in the held-out test split
    model = export.load_student(three_class["ckpt"])
    record = {"loader": "memory", "source": f"folder:{d}", "classes": ["c0", "c1", "c2"], "mean": [0.4], "std": [0.2]}
    save_checkpoint(tmp_path / "trained.pt", model, data=record)
    r = export.export(tmp_path / "trained.pt", tmp_path / "out", batch_sizes="1", verify_images=2, progress=False)
    v = r.manifest["verification"]["data_source"]
    assert v["source"] == f"folder:{d.resolve()}" and v["chosen_by"] == "checkpoint" and v["decoded"] == 2
    assert v["normalization"] == {"mean": [0.4], "std": [0.2], "from": "checkpoint"}
    save_checkpoint(tmp_path / "elsewhere.pt", model, data=dict(record, source=f"folder:{tmp_path / 'gone'}"))
    with pytest.raises(DvitError) as info:
        export.export(tmp_path / "elsewhere.pt", tmp_path / "out2", batch_sizes="1", progress=False)
    assert "\n" not in str(info.value) and "--data DIR" in str(info.value) and "gone" in str(info.value)
    # Other class names than those it was trained on: refused.
    save_checkpoint(tmp_path / "renamed.pt", model, data=dict(record, classes=["a", "b", "c"]))
    with pytest.raises(DvitError, match="classes differ"):
        export.export(tmp_path / "renamed.pt", tmp_path / "out3", batch_sizes="1", progress=False)
    assert not (tmp_path / "out2").exists() and not (tmp_path / "out3").exists()


@pytest.mark.parametrize("case", ["no --data", "--data fashion-mnist", "--data with 2 classes",
                                  "--data 32x32 idx files for 28x28"])
def test_images_that_do_not_fit_the_model_are_refused(case: str, three_class: dict[str, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A 3-class model is not silently verified on Fashion-MNIST (10 classes), nor on a folder of another
    class count: one line, naming --data, nothing written."""
    ckpt, data = three_class["ckpt"], None
    if case == "--data fashion-mnist":
        data = "fashion-mnist"
    elif case == "--data with 2 classes":
        _image_folder(tmp_path / "two", per_class=3, classes=2, size=32)
        data = str(tmp_path / "two")
    elif case == "--data 32x32 idx files for 28x28":
        ckpt = three_class["dir"] / "ten.pt"
        if not ckpt.exists():
            save_checkpoint(ckpt, tiny_student())
        data = str(tmp_path / "fmnist-like")
        (tmp_path / "fmnist-like").mkdir()
        for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                     "t10k-labels-idx1-ubyte.gz"):
            _write_idx(tmp_path / "fmnist-like" / name, 3 if "images" in name else 1)
    argv = ["export", "--checkpoint", str(ckpt), "--batch-sizes", "1", "--out", str(tmp_path / "out"), "--no-progress"]
    assert cli.main(argv + (["--data", data] if data else [])) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("dvit export: error: "), err
    assert "--data" in err and not (tmp_path / "out").exists(), err


def _write_idx(path: Path, dims: int) -> None:
    """An idx.gz file in Fashion-MNIST's format: 4 grey 32x32 images, or 4 labels."""
    import gzip
    import struct

    shape = (4, 32, 32) if dims == 3 else (4,)
    head = b"\0\0\x08" + bytes([dims]) + b"".join(struct.pack(">I", n) for n in shape)
    with gzip.open(path, "wb") as f:
        f.write(head + bytes(int(np.prod(shape))))
