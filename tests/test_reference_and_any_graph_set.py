"""Validation of any graph set (export, precision, plugin) against any reference (PyTorch, a recording made by
`dvit reference`, another graph set), and the plugin pass on precision graph sets. Tiny model, real Fashion-MNIST
test images, real ONNX Runtime sessions, real ModelOpt conversions."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_contract import BLOCKER
from test_precision import make_tiny_export, tiny_model

from pipeline import plugin_pass, precision, reference, validate
from pipeline.backend import graph_runners
from pipeline.checkpoint import save_checkpoint
from pipeline.comparison.driver import compare
from pipeline.errors import DvitError
from pipeline.graphset import GraphSet
from pipeline.results.reference import load_recording
from pipeline.runners.recorded import RecordedRunner

pytest.importorskip("onnxruntime_extensions", reason="plugin graphs run in ONNX Runtime through onnxruntime-extensions")

LIMIT = 20  # 5 batches of 4; not a multiple of REF_CHUNK, so the last chunk is partial
REPO = Path(__file__).resolve().parents[1]
PROVENANCE = ("reference", "elapsed_s", "graphs_dir", "manifest", "precision", "requirements", "model")


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("anyset")
    export, ckpt = make_tiny_export(root)
    cache = root / "cache"
    sets = {"export": export}
    for spec in ("fp16", "int8", "fp16,int8,int8,fp16"):
        sets[spec] = precision.build_precision(export, root / spec.replace(",", "-"), spec, calib_size=16, cache_dir=cache,
                                               calib_method="max", progress=False)
    ref = reference.record(root / "ref.npz", graphs=str(export), limit=LIMIT, threads=1, progress=False)
    return {"root": root, "ckpt": ckpt, "sets": sets, "ref": ref}


def run(d: Path, **kw: Any) -> dict[str, Any]:
    kw.setdefault("limit", LIMIT)
    kw.setdefault("progress", False)
    kw.setdefault("threads", 1)
    kw.setdefault("consistency_samples", 0)
    kw.setdefault("batch_size", 4)
    return validate.validate(d, **kw)


def figures(r: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in r.items() if k not in PROVENANCE} | {"reference_accuracy": r["reference"]["accuracy"]}


@pytest.mark.parametrize("name", ["export", "int8", "fp16,int8,int8,fp16"])
def test_recorded_reference_gives_the_figures_pytorch_gives(art: dict[str, Any], name: str) -> None:
    d = art["sets"][name]
    live = run(d)
    recorded = run(d, reference=str(art["ref"]))
    assert live["reference"]["kind"] == "pytorch" and recorded["reference"]["kind"] == "recorded"
    assert figures(recorded) == figures(live)
    assert recorded["requirements"]["checks"] == live["requirements"]["checks"]
    assert live["chain"]["boundaries"] and live["chain"]["kept_isolated"]  # the recording has the tokens


def test_recording_holds_images_outputs_and_provenance(art: dict[str, Any]) -> None:
    rec = load_recording(art["ref"])
    gs = GraphSet.load(art["sets"]["export"])
    assert rec.data.images.dtype == np.uint8 and rec.data.images.shape == (LIMIT, 1, 28, 28)
    assert rec.checkpoint_sha256 == gs.checkpoint["sha256"] and rec.meta["model"]["config"] == gs.config.to_dict()
    assert set(rec.outputs) == {"logits", *(f"kept_indices_{i}" for i in (1, 2, 3)), *(f"tokens_{i}" for i in (1, 2, 3))}
    runner = RecordedRunner(rec)
    x = rec.data.normalized(3, 7)
    out = runner.infer({"images": x})
    assert np.array_equal(out["logits"], rec.outputs["logits"][3:7])
    with pytest.raises(DvitError, match="not in ref.npz"):
        runner.infer({"images": x + 1.0})


def test_validation_against_a_recording_runs_without_torch(art: dict[str, Any], tmp_path: Path) -> None:
    """The device side: `dvit validate --reference REF.npz` with torch, timm and ModelOpt unimportable."""
    out = tmp_path / "v.json"
    code = BLOCKER + (
        "import sys; from pipeline.cli import main\n"
        f"sys.exit(main(['validate', '--graphs', {str(art['sets']['int8'])!r}, '--reference', {str(art['ref'])!r},"
        f" '--batch-size', '4', '--threads', '1', '--consistency-samples', '0', '--no-progress', '--json', {str(out)!r}]))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(out.read_text())
    assert figures(got) == figures(run(art["sets"]["int8"]))


def test_reference_from_another_model_or_slice_is_refused(art: dict[str, Any], tmp_path: Path) -> None:
    other = tmp_path / "other.pt"
    save_checkpoint(other, tiny_model(seed=3))
    ref2 = reference.record(tmp_path / "other.npz", checkpoint=str(other), limit=8, threads=1, progress=False)
    with pytest.raises(DvitError, match=r"recorded from checkpoint .* but .* was exported from .*dvit reference --graphs"):
        run(art["sets"]["export"], reference=str(ref2))
    with pytest.raises(DvitError, match=r"holds 20 images, fewer than --limit 24"):
        run(art["sets"]["export"], reference=str(art["ref"]), limit=24)
    with pytest.raises(DvitError, match="holds images of fashion-mnist"):
        run(art["sets"]["export"], reference=str(art["ref"]), data=str(tmp_path))
    npz = tmp_path / "copy.npz"
    shutil.copyfile(art["ref"].with_suffix(".npz"), npz)
    shutil.copyfile(art["ref"], npz.with_suffix(".json"))
    with open(npz, "ab") as f:
        f.write(b"\0")
    with pytest.raises(DvitError, match="does not match the hash"):
        run(art["sets"]["export"], reference=str(npz))


def test_a_reference_missing_outputs_is_named(art: dict[str, Any], tmp_path: Path) -> None:
    no_tokens = reference.record(tmp_path / "small.npz", graphs=str(art["sets"]["export"]), limit=LIMIT, tokens=False,
                                 threads=1, progress=False)
    r = run(art["sets"]["export"], reference=str(no_tokens))
    assert r["chain"]["boundaries"] == [] and r["chain"]["kept_isolated"] == [] and r["chain"]["isolated_logits"] is None
    assert figures(run(art["sets"]["export"]))["chain"]["kept"] == r["chain"]["kept"]
    rec = load_recording(no_tokens)
    del rec.outputs["kept_indices_2"]
    with graph_runners(GraphSet.load(art["sets"]["export"]), 4) as runners, \
            pytest.raises(DvitError, match=r"does not produce kept_indices_2, which the comparison needs: compare against"):
        compare(runners.chain, runners.fused, RecordedRunner(rec), rec.data, [34, 24, 16], progress=False)


def test_graph_set_as_reference(art: dict[str, Any]) -> None:
    r = run(art["sets"]["int8"], reference=str(art["sets"]["export"]))
    assert r["reference"]["kind"] == "graphs" and r["reference"]["graphs"]["precision"] == ["fp32"] * 4
    live = run(art["sets"]["int8"])
    # the FP32 graphs compute what PyTorch computes (to 1e-5), so INT8 agrees with both alike
    assert r["reference"]["accuracy"] == live["reference"]["accuracy"]
    assert r["chain"]["agreement"] == live["chain"]["agreement"]
    assert abs(r["chain"]["logits"]["max_abs"] - live["chain"]["logits"]["max_abs"]) < 1e-3
    same = run(art["sets"]["export"], reference=str(art["sets"]["export"]))
    assert same["chain"]["logits"]["max_abs"] == 0.0 and same["chain"]["agreement"] == 1.0


@pytest.mark.parametrize("name", ["fp16", "int8", "fp16,int8,int8,fp16"])
def test_plugin_pass_on_precision_graph_sets(art: dict[str, Any], name: str) -> None:
    src = art["sets"][name]
    out = art["root"] / f"plugin-{name.replace(',', '-')}"
    m = plugin_pass.plugin_pass(src, out, progress=False)  # verifies bitwise equality with the source graphs
    gs = GraphSet.load(out)
    assert gs.kind == "plugin" and gs.precision == GraphSet.load(src).precision
    assert m["replaced"]["total"] == 2 * (3 + 3)  # two batch sizes: three stage graphs and the fused graph's three
    assert m["source_graphs"]["kind"] == "precision"
    assert all(e.info.get("verified", "").startswith("bitwise equal") for e in gs.entries() if e.plugin_nodes)
    # and validation runs the plugin graphs (through the reference op): the source set's exact figures, except
    # where ONNX Runtime's graph rewrites emulate FP16 on the CPU (its Cast elimination around the custom op
    # differs; with rewrites off, the pass above proved the outputs bitwise equal)
    got, want = figures(run(out, reference=str(art["ref"]))), figures(run(src, reference=str(art["ref"])))
    if name != "fp16":
        assert got == want
    else:
        assert got["chain"]["agreement"] == want["chain"]["agreement"] and got["fused"]["agreement"] == 1.0
        assert min(k["iou_mean"] for k in got["fused"]["kept"]) > 0.98 and got["chain_vs_fused"]["logits_max_abs"] < 1e-3


def test_validate_plugin_graphs_of_the_export(art: dict[str, Any]) -> None:
    out = art["root"] / "plugin-fp32"
    plugin_pass.plugin_pass(art["sets"]["export"], out, progress=False)
    r = run(out, require="fp32", consistency_samples=8)
    assert r["manifest"]["kind"] == "plugin" and r["requirements"]["passed"], r["requirements"]
    assert r["batch_consistency"]["fused"]["kept_identical"] == [1.0] * 3
