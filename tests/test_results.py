"""Typed results (pipeline.results): what validate, latency, reference and deploy write, read back and written
again byte for byte; refused in one line naming the command that writes the right file; latency's pruned/dense
pairing by one rule. Real files: a tiny student exported with its dense teacher (keep 0.7) and without one
(keep 0.5), validated, timed and recorded by the stages' own commands."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_contract import PIPELINE, REPO, _imports, _stage_of
from test_precision import tiny_model

from pipeline import cli
from pipeline.errors import DvitError
from pipeline.io import atomic_write_json, sha256_file
from pipeline.results import formats
from pipeline.results.deploy import DeployRecord
from pipeline.results.jsonfile import WrongFormat
from pipeline.results.latency import LatencyResult, Pair, pair_pruned_dense, ratio_entries
from pipeline.results.reference import Recording, load_recording
from pipeline.results.validation import ValidationResult
from pipeline.runners.recorded import RecordedRunner

LIMIT = 8
FAST = ["--warmup-s", "0.01", "--duration-s", "0.02", "--min-iters", "2", "--rounds", "1"]


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from pipeline.checkpoint import save_checkpoint
    from pipeline.export import export
    from pipeline.model import DynamicViT
    from pipeline.reference import record

    root = tmp_path_factory.mktemp("results")
    student = tiny_model(0)
    save_checkpoint(root / "student.pt", student)
    save_checkpoint(root / "teacher.pt", DynamicViT(student.cfg.as_dense()).eval())
    with_teacher, alone = root / "export-0.7", root / "export-0.5"
    export(root / "student.pt", with_teacher, teacher=root / "teacher.pt", batch_sizes=(2,), verify_images=2,
           progress=False)
    export(root / "student.pt", alone, keep_ratio=0.5, batch_sizes=(2,), verify_images=2, progress=False)
    v = root / "v.json"
    assert cli.main(["validate", "--graphs", str(with_teacher), "--limit", str(LIMIT), "--threads", "1",
                     "--consistency-samples", "0", "--no-progress", "--json", str(v)]) == 0
    lat = root / "latency.json"
    assert cli.main(["latency", "--graphs", str(with_teacher), "--graphs", str(alone), "--threads", "1", "--no-pin",
                     *FAST, "--no-progress", "--json", str(lat)]) == 0
    ref = record(root / "ref.npz", graphs=str(with_teacher), limit=LIMIT, threads=1, progress=False)
    return {"root": root, "with_teacher": with_teacher, "alone": alone, "validation": v, "latency": lat,
            "ref": ref.with_suffix(".npz"), "cfg": student.cfg}


# ---------------------------------------------------------------- each kind reads what its stage wrote, writes it again
def test_validation_result_reads_and_rewrites_what_validate_wrote(art: dict[str, Any], tmp_path: Path) -> None:
    from pipeline import validate

    v = ValidationResult.load(art["validation"])
    assert v.data == json.loads(art["validation"].read_text()) and v.sha256 == sha256_file(art["validation"])
    assert v.path == art["validation"] and v.graphs_dir == str(art["with_teacher"])
    assert v.keep_counts == art["cfg"].keep_counts and v.manifest_kind == "export" and v.precision == ["fp32"] * 4
    assert v.model_config == art["cfg"].to_dict() and v.reference["kind"] == "pytorch" and v.passed is not None
    assert validate.load_result(art["validation"]) == v.data  # the stage's reader is this one
    copy = v.save(tmp_path / "copy.json")
    assert copy.read_bytes() == art["validation"].read_bytes()


def test_latency_result_reads_and_rewrites_what_latency_wrote(art: dict[str, Any], tmp_path: Path) -> None:
    lat = LatencyResult.load(art["latency"])
    assert lat.data == json.loads(art["latency"].read_text()) and lat.sha256 == sha256_file(art["latency"])
    assert set(lat.graph_sets) == {str(art["with_teacher"]), str(art["alone"])} and lat.unavailable == []
    assert lat.save(tmp_path / "copy.json").read_bytes() == art["latency"].read_bytes()


def test_latency_wrote_its_ratios_by_the_one_pairing_rule(art: dict[str, Any]) -> None:
    """The set exported without a teacher has no dense run: its pruned runs get no ratio, and are never compared
    with the other set's teacher."""
    lat = LatencyResult.load(art["latency"])
    flops = {g: x["flops"] for g, x in lat.graph_sets.items()}
    assert lat.ratios == ratio_entries(lat.runs, flops)
    assert {q["graphs"] for q in lat.ratios} == {str(art["with_teacher"])}
    assert sorted(q["mode"] for q in lat.ratios) == ["chain", "fused"]
    pairs = lat.pairs()
    assert [(p.pruned or {}).get("graphs") for p in pairs] == [str(art["with_teacher"])] * 2 + [str(art["alone"])] * 2
    for p in pairs:
        assert p.pruned is not None
        if p.pruned["graphs"] == str(art["alone"]):
            assert p.dense is None and p.ratio() is None and lat.written_ratio(p.pruned) is None
        else:
            assert p.dense is not None and p.dense["graphs"] == p.pruned["graphs"] and p.dense["model"] == "dense"
            written = lat.written_ratio(p.pruned)
            assert written is not None and written["latency_ratio_p50"] == p.ratio("p50_ms")
            assert written["latency_ratio_mean"] == p.ratio("mean_ms")


def test_pairing_key_is_graphs_batch_backend_and_io_variant() -> None:
    def run(model: str, graphs: str = "a", batch: int = 2, backend: str = "tensorrt", io: str = "host",
            cuda_graph: bool = False, p50: float = 1.0, mode: str = "fused") -> dict[str, Any]:
        return {"graphs": graphs, "model": model, "mode": mode, "batch": batch, "backend": backend, "io": io,
                "cuda_graph": cuda_graph, "end_to_end": {"p50_ms": p50, "mean_ms": p50}}

    dense_host, dense_b, dense_graph = run("dense", p50=4.0), run("dense", "b", p50=8.0), run("dense", cuda_graph=True)
    runs = [
        run("pruned", p50=1.0),  # -> dense_host
        run("pruned", io="device"),  # no dense timed with device I/O
        run("pruned", cuda_graph=True, p50=3.0),  # -> dense_graph
        run("pruned", "c"),  # no dense of its own graph set: not b's, not a's
        run("pruned", batch=1),  # another batch
        run("pruned", backend="onnxruntime"),  # another backend
        {"graphs": "a", "backend": "tensorrt", "batch": 2, "unavailable": "no GPU"},  # not timed: not paired
        dense_host, dense_b, dense_graph, run("dense", p50=99.0),  # a second dense of one key: the first counts
    ]
    pairs = pair_pruned_dense(runs)
    assert [p.dense for p in pairs[:6]] == [dense_host, None, dense_graph, None, None, None]
    assert pairs[0].ratio() == 0.25 and pairs[2].ratio() == 3.0 and pairs[1].ratio() is None
    assert pairs[6:] == [Pair(None, dense_b), Pair(None, runs[-1])]  # dense runs no pruned run was paired with
    entries = ratio_entries(runs, {"a": {"ratio": 0.6}})
    assert [(q["cuda_graph"], q["latency_ratio_p50"], q["flops_ratio"]) for q in entries] == [(False, 0.25, 0.6),
                                                                                             (True, 3.0, 0.6)]


def test_recording_reads_and_rewrites_what_reference_wrote(art: dict[str, Any], tmp_path: Path) -> None:
    rec = Recording.load(art["ref"])
    assert load_recording(art["ref"].with_suffix(".json")).meta == rec.meta  # either file names the recording
    assert rec.keep_counts == art["cfg"].keep_counts and rec.model_config == art["cfg"].to_dict()
    assert rec.npz_sha256 == sha256_file(art["ref"]) and rec.json_path == art["ref"].with_suffix(".json")
    meta = rec.save(tmp_path / "ref.npz")
    again = load_recording(meta)
    assert {k: v for k, v in again.meta.items() if k != "npz"} == {k: v for k, v in rec.meta.items() if k != "npz"}
    assert again.meta["npz"]["file"] == "ref.npz" and "torch" in again.meta  # the recorder's provenance travels
    assert set(again.outputs) == set(rec.outputs)
    assert all(np.array_equal(again.outputs[k], rec.outputs[k]) for k in rec.outputs)
    assert np.array_equal(again.data.images, rec.data.images)
    # the runner replays the recording it is given
    out = RecordedRunner(again).infer({"images": rec.data.normalized(2, 5)})
    assert np.array_equal(out["logits"], rec.outputs["logits"][2:5])


def test_deploy_record_reads_and_rewrites_what_deploy_writes(tmp_path: Path) -> None:
    from pipeline.deploy import DeployResult, StepRecord

    r = DeployResult(status="failed", host="user@jetson", target="orin-nano", release="20260101-000000",
                     steps=[StepRecord("preflight", "ok", seconds=1.5), StepRecord("build", "failed", returncode=2)],
                     validation={"passed": True, "profile": "fp16"}, error="step build failed")
    written = atomic_write_json(tmp_path / "deploy.json", {"format": formats.DEPLOY.name, **r.to_dict()})  # as deploy does
    d = DeployRecord.load(written)
    assert (d.status, d.host, d.target, d.release) == ("failed", "user@jetson", "orin-nano", "20260101-000000")
    assert (d.step("build") or {}).get("returncode") == 2 and d.step("latency") is None
    assert d.validation == {"passed": True, "profile": "fp16"} and d.power is None
    assert d.save(tmp_path / "copy.json").read_bytes() == written.read_bytes()


def test_the_stages_write_the_formats_the_readers_read() -> None:
    from pipeline import deploy, latency, validate

    assert (validate.FORMAT, latency.FORMAT, deploy.FORMAT) == (formats.VALIDATION.name, formats.LATENCY.name,
                                                                formats.DEPLOY.name)


# ---------------------------------------------------------------- refusals: one line, naming the command that writes it
def test_another_kind_or_version_is_refused_naming_its_writer(art: dict[str, Any], tmp_path: Path) -> None:
    def refused(load: Any, path: Path, match: str) -> None:
        with pytest.raises(DvitError, match=match) as e:
            load(path)
        assert "\n" not in str(e.value)

    refused(ValidationResult.load, art["latency"], r"latency.json is a latency result, not a validation result: pass "
            r"what 'dvit validate --graphs DIR --json OUT.json' writes")
    refused(LatencyResult.load, art["validation"], r"v.json is a validation result, not a latency result: pass what "
            r"'dvit latency --graphs DIR --json OUT.json' writes")
    refused(DeployRecord.load, art["validation"], r"is a validation result, not a deploy record: pass what 'dvit deploy ")
    old = atomic_write_json(tmp_path / "old.json", {**json.loads(art["latency"].read_text()), "format": "dvit-edge/latency/v0"})
    refused(LatencyResult.load, old, r"old.json is a latency result of format dvit-edge/latency/v0, this version reads "
            r"dvit-edge/latency/v1: re-run 'dvit latency --graphs DIR --json OUT.json'")
    other = atomic_write_json(tmp_path / "other.json", {"format": "something/else"})
    refused(ValidationResult.load, other, r"other.json is not a dvit validation result \(format 'something/else', "
            r"expected dvit-edge/validation/v2\): re-run 'dvit validate")
    truncated = {k: v for k, v in json.loads(art["validation"].read_text()).items() if k != "chain"}
    refused(ValidationResult.load, atomic_write_json(tmp_path / "cut.json", truncated),
            r"cut.json is a validation result without 'chain' \(truncated or hand-edited\?\): re-run 'dvit validate")
    (tmp_path / "broken.json").write_text("{")
    refused(LatencyResult.load, tmp_path / "broken.json", r"broken.json is not a readable JSON file")
    refused(ValidationResult.load, tmp_path / "missing.json", r"validation result .*missing.json not found: re-run")
    # a REF.json that is a latency result, beside a real npz
    (tmp_path / "x.npz").write_bytes(art["ref"].read_bytes())
    (tmp_path / "x.json").write_text(art["latency"].read_text())
    refused(load_recording, tmp_path / "x.npz", r"x.json is a latency result, not a recorded reference: pass what "
            r"'dvit reference --graphs DIR --out REF.npz' writes")
    with pytest.raises(WrongFormat) as e:
        ValidationResult.load(art["latency"])
    assert e.value.found == formats.LATENCY  # what the file is, for a caller's own wording


def test_save_refuses_what_load_would_refuse(art: dict[str, Any], tmp_path: Path) -> None:
    data = json.loads(art["validation"].read_text())
    del data["requirements"]
    with pytest.raises(ValueError, match="internal: refusing to write a result that would not read back: .*'requirements'"):
        ValidationResult(data).save(tmp_path / "v.json")
    bad_run = {**json.loads(art["latency"].read_text()), "runs": [{"backend": "onnxruntime", "model": "sparse",
                                                                   "batch": 2, "end_to_end": {"p50_ms": 1.0}}]}
    with pytest.raises(ValueError, match="run 0 has model 'sparse'"):
        LatencyResult(bad_run).save(tmp_path / "l.json")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- results are shared: they import no stage
def test_results_import_no_stage() -> None:
    offences = [f"{p.relative_to(REPO)} imports {m}" for p in (PIPELINE / "results").glob("*.py")
                for m in _imports(p) if _stage_of(m) is not None]
    assert offences == []
    assert "pipeline.results.jsonfile" in _imports(PIPELINE / "results" / "latency.py")  # the reader sees imports
