"""dvit latency: the timing harness, its statistics, the ONNX FLOP counter, ONNX Runtime's thread pools, the report.

Real ONNX Runtime sessions on a tiny exported model (with its dense teacher) and short durations (0.05 s per
runner); no timing threshold is asserted anywhere (speed targets belong to benchmarks/). The statistics are checked
on synthetic samples, the interleaving on a fake clock.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from test_contract import BLOCKER
from test_precision import tiny_model

from pipeline import latency
from pipeline.backend.onnxruntime import pools as cpu_pool
from pipeline.errors import ConfigError, ManifestError
from pipeline.graphset import GraphSet, batch_section, write_graph_set
from pipeline.latency import flops, timing
from pipeline.latency.timing import STATS_KEYS, Case, TimingSettings
from pipeline.manifest import file_entry

REPO = Path(__file__).resolve().parents[1]
FAST = TimingSettings(warmup_s=0.02, duration_s=0.05, min_iters=4, rounds=2)
THREADS = 1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny student (4 stages) and its dense teacher, exported at batch sizes 2 and 1."""
    from pipeline.checkpoint import save_checkpoint
    from pipeline.export import export
    from pipeline.model import DynamicViT

    root = tmp_path_factory.mktemp("latency")
    student = tiny_model(0)
    teacher = DynamicViT(student.cfg.as_dense()).eval()
    save_checkpoint(root / "student.pt", student)
    save_checkpoint(root / "teacher.pt", teacher)
    export(root / "student.pt", root / "export", teacher=root / "teacher.pt", batch_sizes=(2, 1), verify_images=2,
           progress=False)
    return {"root": root, "export": root / "export", "student": student, "teacher": teacher}


def write_engine_set(export_dir: Path, out: Path, make_plan: Callable[[Path], bytes], **body: object) -> Path:
    """An engine set with the export's structure: each graph's plan made by `make_plan(onnx_path)`."""
    gs = GraphSet.load(export_dir)

    def entry(e):  # type: ignore[no-untyped-def]
        rel = str(Path(e.file).with_suffix(".plan"))
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(make_plan(e.path))
        return file_entry(out, rel, **{k: v for k, v in e.info.items() if k not in ("file", "sha256", "bytes")})

    graphs = {b: batch_section([entry(e) for e in g.stages], entry(g.fused), entry(g.teacher) if g.teacher else None)
              for b, g in gs.batches.items()}
    write_graph_set(out, "engine", gs.header(), graphs, **body)
    return out


# ---------------------------------------------------------------- statistics (arithmetic on known samples)
def test_statistics_of_known_samples() -> None:
    s = timing.summarize(list(range(1, 101)))  # 1..100 ms
    assert s.iterations == 100 and s.mean_ms == 50.5
    assert (s.p50_ms, s.p90_ms, s.p95_ms, s.p99_ms) == pytest.approx((50.5, 90.1, 95.05, 99.01))
    assert s.cv == pytest.approx(np.std(np.arange(1, 101)) / 50.5)  # population std, as trtexec
    assert s.noisy and set(s.to_dict()) == set(STATS_KEYS)
    flat = timing.summarize([2.0] * 7)
    assert (flat.p50_ms, flat.p99_ms, flat.cv, flat.noisy) == (2.0, 2.0, 0.0, False)
    with pytest.raises(ValueError):
        timing.summarize([])


@pytest.mark.parametrize("spread, noisy", [(0.024, False), (0.026, True)])
def test_noisy_flag_is_a_cv_above_2_5_percent(spread: float, noisy: bool) -> None:
    s = timing.summarize([1 - spread, 1 + spread] * 10)  # mean 1, population std = spread
    assert s.cv == pytest.approx(spread) and s.noisy is noisy
    assert timing.summarize([1 - spread, 1 + spread], noisy_cv=0.03).noisy is False


def test_case_result_has_stage_statistics_and_throughput() -> None:
    c = Case({"model": "pruned"}, lambda: None, batch=8, samples=[4.0, 4.0, 4.0],
             stage_samples=[[1.0, 3.0], [1.0, 3.0], [1.0, 3.0]])
    r = c.result()
    assert r["model"] == "pruned" and r["batch"] == 8 and r["end_to_end"]["mean_ms"] == 4.0
    assert [s["p50_ms"] for s in r["stages"]] == [1.0, 3.0]
    assert r["throughput_ips"] == pytest.approx(8 / 0.004)
    assert Case({}, lambda: None, 1, samples=[1.0]).result()["stages"] is None


# ---------------------------------------------------------------- the harness (fake clock)
def test_interleaved_rounds_warmup_and_minimum_iterations() -> None:
    now = [0.0]
    log: list[str] = []

    def step(name: str) -> Callable[[], None]:
        def run() -> None:
            log.append(name)
            now[0] += 1.0  # every step takes one second of the fake clock

        return run

    cases = [Case({"name": n}, step(n), 1) for n in "ABC"]
    ticks = []
    settings = TimingSettings(warmup_s=2, duration_s=6, min_iters=1, rounds=3)
    order = timing.run_interleaved(cases, settings, tick=lambda: ticks.append(1), clock=lambda: now[0])
    assert order == [0, 1, 2] * 3  # A B C, A B C, A B C
    assert "".join(log) == "AABBCC" + "AABBCC" * 3  # warm-up by time (2 s each), then 2 s slots
    assert [len(c.samples) for c in cases] == [6, 6, 6] and set(cases[0].samples) == {1000.0}
    assert len(ticks) == timing.slots(3, settings)
    # the minimum count wins over the time budget: 10 iterations in 2 rounds = 5 per slot, however fast
    fast = [Case({}, step("x"), 1)]
    timing.run_interleaved(fast, TimingSettings(warmup_s=0, duration_s=1e-9, min_iters=10, rounds=2),
                           clock=lambda: now[0])
    assert len(fast[0].samples) == 10


def test_per_stage_times_come_from_iterations_outside_the_timed_ones() -> None:
    """What a GPU case records inside its timed step costs every case the same (one pair of events: device_time,
    read after the host clock stopped); a chain's per-stage times (stage_step) come from iterations of their own,
    which the host clock never sees (fake clock: a timed step takes 1 s, a per-stage iteration 100 s)."""
    now = [0.0]
    calls: list[str] = []

    def step() -> None:
        calls.append("step")
        now[0] += 1.0

    def device_time() -> float:
        calls.append("device")
        return 0.5

    def stage_step() -> list[float]:
        calls.append("stages")
        now[0] += 100.0
        return [0.2, 0.3]

    chain = Case({"mode": "chain"}, step, 1, device_time, stage_step)
    fused = Case({"mode": "fused"}, step, 1, device_time)
    timing.run_interleaved([chain, fused], TimingSettings(warmup_s=0, duration_s=2, min_iters=2, rounds=2),
                           clock=lambda: now[0])
    assert set(chain.samples) == set(fused.samples) == {1000.0}  # the stage iterations are not in the timed ones
    assert chain.device_samples == fused.device_samples == [0.5] * len(chain.samples)
    assert chain.stage_samples == [[0.2, 0.3]] * len(chain.samples) and fused.stage_samples == []
    r = chain.result()
    assert r["gpu"]["p50_ms"] == 0.5 and [s["p50_ms"] for s in r["stages"]] == [0.2, 0.3]
    assert fused.result()["stages"] is None
    # warm-up, then per round: the chain's timed step and its event pair, its per-stage iteration; the fused one's
    assert calls == ["step", "step"] + ["step", "device", "stages", "step", "device"] * 2


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="positive duration"):
        TimingSettings(duration_s=0)
    with pytest.raises(ConfigError, match="positive counts"):
        TimingSettings(min_iters=0)
    with pytest.raises(ConfigError, match="--batch-sizes 1,8"):
        latency.parse_batch_sizes("1,x")
    assert latency.parse_batch_sizes("8,1,8") == [8, 1]


def test_stage_times_time_each_stage_inside_the_chain(tiny: dict) -> None:
    from pipeline.backend.onnxruntime.runner import OnnxRuntimeRunner
    from pipeline.runners.chain import StageChain

    g = GraphSet.load(tiny["export"]).batch(2)
    times = timing.StageTimes()
    stages = [OnnxRuntimeRunner(e.path, e.name, threads=THREADS) for e in g.stages]
    chain = StageChain([times.wrap(r) for r in stages])
    plain = StageChain(stages)
    x = {"images": np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)}
    timed, ref = chain.infer(x), plain.infer(x)
    assert len(times.take()) == 4 and times.take() == []
    assert timed.keys() == ref.keys() and all(np.array_equal(timed[k], ref[k]) for k in ref)
    assert [s.name for s in chain.stages] == [e.name for e in g.stages]


# ---------------------------------------------------------------- FLOPs
def test_onnx_flops_equal_torch_flop_counter(tiny: dict) -> None:
    """The counter on the ONNX graphs against torch.utils.flop_counter on the real inference pass: both count
    2 x multiply-adds of matrix products and convolutions only, so they agree exactly (the margin covers an op
    that one side would express differently, e.g. attention as one fused SDPA call)."""
    from pipeline.measure import count_flops

    f = flops.graph_set_flops(GraphSet.load(tiny["export"]))
    assert f is not None
    torch_pruned, torch_dense = count_flops(tiny["student"]), count_flops(tiny["teacher"])
    assert f["pruned"] == pytest.approx(torch_pruned, rel=0.02) and f["dense"] == pytest.approx(torch_dense, rel=0.02)
    assert f["ratio"] == pytest.approx(torch_pruned / torch_dense, rel=0.02)
    g = GraphSet.load(tiny["export"]).batch(2)  # the stage graphs add up to the fused graph, per image
    assert sum(flops.graph_flops(e.path) for e in g.stages) == flops.graph_flops(g.fused.path) == 2 * f["pruned"]


def test_flop_counter_node_arithmetic() -> None:
    from onnx import TensorProto, helper

    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Gemm", ["y2", "w2"], ["z"], transB=1),
             helper.make_node("Conv", ["img", "k"], ["c"], strides=[2, 2])]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5, 7]),
         helper.make_tensor_value_info("y2", TensorProto.FLOAT, [4, 6]),
         helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 2, 8, 8])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "z", "c")],
        [helper.make_tensor("w", TensorProto.FLOAT, [7, 11], np.zeros(77)),
         helper.make_tensor("w2", TensorProto.FLOAT, [9, 6], np.zeros(54)),
         helper.make_tensor("k", TensorProto.FLOAT, [4, 2, 3, 3], np.zeros(72))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    # MatMul 2*(3*5*11)*7, Gemm 2*(4*9)*6, Conv 2*(1*4*3*3)*(2*3*3)
    assert flops.graph_flops(model) == 2 * 165 * 7 + 2 * 36 * 6 + 2 * 36 * 18


# ---------------------------------------------------------------- ONNX Runtime thread pools
POOL_PROBE = """
import json, sys
from contextlib import ExitStack
import numpy as np
from pipeline import backend, latency
from pipeline.backend.onnxruntime import pools
from pipeline.errors import DvitError
from pipeline.graphset import GraphSet
made = []
def recording(*args, **kwargs):  # the runners latency asks the factory for
    made.append(backend.graph_runners(*args, **kwargs))
    return made[-1]
latency.graph_runners = recording
pool = sys.argv[2] or None
with ExitStack() as closer:
    cases = latency.ort_cases(GraphSet.load(sys.argv[1]), 1, 1, pool, np.random.default_rng(0), closer)
    for c in cases:
        c.step()
    seen = sorted({json.dumps(pools.describe(r.session), sort_keys=True)
                   for m in made for r in [*m.stages, m.fused, m.teacher]})
try:
    pools.apply(__import__("onnxruntime").SessionOptions(), "no-spin", 1)
    refused = None
except DvitError as e:
    refused = str(e)
print(json.dumps({"keys": [c.key["model"] + "/" + c.key["mode"] for c in cases], "seen": seen,
                  "global": pools.global_pool_threads(), "refused": refused}))
"""


def _probe_pool(export: Path, pool: str, env_pool: str | None = None) -> dict:
    """Each pool in a process of its own: the global pool, once made, is final for its process."""
    env = {k: v for k, v in os.environ.items() if k != "DVIT_ORT_POOL"}
    if env_pool is not None:
        env["DVIT_ORT_POOL"] = env_pool
    out = subprocess.run([sys.executable, "-c", POOL_PROBE, str(export), pool], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_pool_settings_reach_the_sessions(tiny: dict) -> None:
    got = {pool: _probe_pool(tiny["export"], pool) for pool in cpu_pool.POOLS}
    got["default"] = _probe_pool(tiny["export"], "")
    for g in got.values():
        assert g["keys"] == ["pruned/chain", "pruned/fused", "dense/fused"]
    # what ONNX Runtime itself says each session was created with
    assert got["no-spin"]["seen"] == [json.dumps({"allow_spinning": "0", "intra_op_num_threads": THREADS,
                                                  "use_per_session_threads": True}, sort_keys=True)]
    assert got["per-session"]["seen"] == [json.dumps({"allow_spinning": None, "intra_op_num_threads": THREADS,
                                                      "use_per_session_threads": True}, sort_keys=True)]
    shared = [json.dumps({"allow_spinning": None, "intra_op_num_threads": THREADS, "use_per_session_threads": False},
                         sort_keys=True)]
    assert got["global"]["seen"] == shared and got["global"]["global"] == THREADS
    # the default is the global pool: every session shares it, and a pool of one's own is then refused in one line
    assert cpu_pool.DEFAULT_POOL == "global" and got["default"]["seen"] == shared
    assert "already runs ONNX Runtime's global thread pool" in got["default"]["refused"]
    assert "\n" not in got["default"]["refused"]
    assert got["no-spin"]["refused"] is None and got["no-spin"]["global"] is None
    # DVIT_ORT_POOL chooses the default for a process that has sessions of its own
    assert _probe_pool(tiny["export"], "", env_pool="no-spin")["seen"] == got["no-spin"]["seen"]
    with pytest.raises(ConfigError, match="unknown --pool"):
        cpu_pool.check("shared", 1)


# ---------------------------------------------------------------- the report
def test_report_schema_and_cli(tiny: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "lat.json"
    parser = argparse.ArgumentParser()
    latency.configure(parser)
    args = parser.parse_args(["--graphs", str(tiny["export"]), "--batch-sizes", "2,1", "--threads", str(THREADS),
                              "--warmup-s", "0.02", "--duration-s", "0.05", "--min-iters", "4", "--rounds", "2",
                              "--json", str(out), "--no-progress"])
    assert latency.main(args) == 0
    r = json.loads(out.read_text())
    assert r["format"] == "dvit-edge/latency/v1" and r["unavailable"] == []
    assert {"cpu", "cores", "os", "versions", "affinity"} <= set(r["machine"])
    assert r["machine"]["versions"]["onnxruntime"]
    s = r["settings"]
    assert (s["batch_sizes"], s["threads"], s["pool"], s["backend"]) == ([2, 1], THREADS, cpu_pool.default_pool(),
                                                                         "onnxruntime")
    assert s["pinned_cpus"] is None or len(s["pinned_cpus"]) == THREADS
    assert (s["warmup_s"], s["duration_s"], s["min_iters"], s["rounds"]) == (0.02, 0.05, 4, 2)
    f = r["flops"]
    assert f["pruned"] < f["dense"] and f["ratio"] == pytest.approx(f["pruned"] / f["dense"])
    runs = r["runs"]
    assert [(x["batch"], x["model"], x["mode"]) for x in runs] == [
        (b, m, mode) for b in (2, 1) for m, mode in (("pruned", "chain"), ("pruned", "fused"), ("dense", "fused"))]
    for x in runs:
        assert x["graphs"] == str(tiny["export"]) and (x["kind"], x["precision"], x["backend"]) == (
            "export", "fp32", "onnxruntime")
        assert set(x["end_to_end"]) == set(STATS_KEYS) and x["end_to_end"]["iterations"] >= 4
        assert x["throughput_ips"] > 0 and (x["io"], x["cuda_graph"], x["gpu"]) == ("host", False, None)
        if x["mode"] == "chain":
            assert len(x["stages"]) == 4 and all(set(st) == set(STATS_KEYS) for st in x["stages"])
            assert all(st["iterations"] == x["end_to_end"]["iterations"] for st in x["stages"])
        else:
            assert x["stages"] is None
    assert [(q["batch"], q["mode"]) for q in r["ratios"]] == [(2, "chain"), (2, "fused"), (1, "chain"), (1, "fused")]
    assert all(q["latency_ratio_p50"] > 0 and q["flops_ratio"] == f["ratio"] for q in r["ratios"])
    text = capsys.readouterr().out
    assert "pruned chain / dense" in text and "FLOPs 0." in text and text.count("\n") >= 10


def test_refusals_are_one_line(tiny: dict, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no graphs for batch size 8 .* \(it has \[1, 2\]\)"):
        latency.measure_latency([tiny["export"]], "8", threads=THREADS, settings=FAST, progress=False)
    with pytest.raises(ManifestError, match="this command takes 'engine'"):
        latency.measure_latency([tiny["export"]], backend="tensorrt", settings=FAST, progress=False)
    with pytest.raises(ConfigError, match="unknown --backend"):
        latency.measure_latency([tiny["export"]], backend="tvm", settings=FAST, progress=False)


def test_tensorrt_without_a_gpu_records_why(tiny: dict, tmp_path: Path) -> None:
    from pipeline.backend.tensorrt.cuda import gpu_available

    ok, why = gpu_available()
    if ok:
        pytest.skip("a GPU is present: tests/test_tensorrt_runner.py times real engines")
    engines = write_engine_set(tiny["export"], tmp_path / "engines", lambda p: b"ftrt" + bytes(60))
    r = latency.measure_latency([engines], backend="tensorrt", settings=FAST, progress=False)
    assert r["unavailable"] == [{"backend": "tensorrt", "reason": why}] and "\n" not in why
    assert [(x["batch"], x["unavailable"]) for x in r["runs"]] == [(1, why), (2, why)]
    assert r["flops"] is None and r["ratios"] == []
    assert "tensorrt unavailable" in latency.format_report(r)


def test_a_run_without_torch_timm_modelopt(tiny: dict) -> None:
    """`dvit latency` with ONNX Runtime, in a fresh process with torch, timm and ModelOpt blocked (a Jetson)."""
    code = BLOCKER + (
        "import pipeline.latency as L, pipeline.backend.tensorrt.runner, pipeline.backend.tensorrt.cuda\n"
        "from pipeline.latency.timing import TimingSettings\n"
        f"r = L.measure_latency([{str(tiny['export'])!r}], '1', threads=1, progress=False,\n"
        "                       settings=TimingSettings(0.01, 0.02, 2, 1))\n"
        "print(len(r['runs']), r['settings']['pool'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'timm', 'modelopt')))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DVIT_ORT_POOL"}  # the default pool, as a user runs it
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False, timeout=120,
                       env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split("\n")[:2] == ["3 global", "[]"]
