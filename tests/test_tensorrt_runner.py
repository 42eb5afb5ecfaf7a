"""The TensorRT runner (pipeline/backend/tensorrt/runner.py) and its CUDA layer (cuda.py).

What cannot run here (no GPU on this machine or CI) is checked statically:
- every TensorRT name the runner uses exists in TensorRT 10.3, 10.13, 11.1 and the installed TensorRT-RTX
  (tools/check_trt_api.py, run on the two files, with the names it must have followed);
- every cuda-python runtime function and enum the CUDA layer uses exists in the installed cuda-python, and each
  wrapper's arguments are accepted by the real bindings (they fail with CUDA's "no driver" error, not a TypeError);
- a plan built by another TensorRT is refused from its header, before any CUDA call or deserialization (real
  TensorRT-RTX plans with an edited version byte), and so is a missing plugin library, naming `make plugins`.
The tests marked gpu build real engines from a tiny export and run them against ONNX Runtime (stage chain on the
device, fused graph, CUDA-graph replay, torch tensors bound zero-copy); they skip, saying why, without a GPU.
"""
from __future__ import annotations

import ast
import struct
from pathlib import Path

import numpy as np
import pytest
import rtx_plans
from script_module import load_script

from pipeline.backend import tensorrt as trt_backend
from pipeline.backend.tensorrt import cuda as cb
from pipeline.backend.tensorrt import plugins
from pipeline.backend.tensorrt import runner as trt_runner
from pipeline.errors import DvitError

REPO = Path(__file__).resolve().parents[1]
ct = load_script("tools/check_trt_api.py")
_missing = [r for r in ct.RELEASES if not (ct.oss_root() / r / "python" / "src").is_dir()]
needs_sources = pytest.mark.skipif(bool(_missing), reason=f"TensorRT binding sources {', '.join(_missing)} not found "
                                   f"under {ct.oss_root()} (set ${ct.ENV_ROOT})")

try:
    import tensorrt_rtx as rtx
except ImportError:  # a Jetson, or a machine without the tensorrt-rtx extra
    rtx = None

FILES = [REPO / "pipeline" / "backend" / "tensorrt" / name for name in ("runner.py", "cuda.py", "plugins.py")]
GPU_OK, GPU_WHY = cb.gpu_available()
gpu = pytest.mark.skipif(not GPU_OK, reason=GPU_WHY)


# ---------------------------------------------------------------- (a) the TensorRT API surface
@needs_sources
def test_runner_uses_only_tensorrt_names_every_release_has() -> None:
    uses, findings = ct.run(FILES, ct.load_surfaces())
    assert not findings, "\n".join(map(str, findings))
    names = {u.name for u in uses if not u.annotation}
    # the check followed every call the runner makes (through its annotated names), not just a few
    assert {"Runtime.deserialize_cuda_engine", "ICudaEngine.create_execution_context", "ICudaEngine.num_io_tensors",
            "ICudaEngine.get_tensor_name", "ICudaEngine.get_tensor_mode", "ICudaEngine.get_tensor_shape",
            "ICudaEngine.get_tensor_dtype", "IExecutionContext.set_tensor_address",
            "IExecutionContext.execute_async_v3", "get_plugin_registry", "IPluginRegistry.load_library",
            "TensorIOMode.INPUT", "nptype"} <= names


def test_the_project_wide_check_covers_the_runner() -> None:
    """tests/test_trt_api_surface.py checks all of pipeline/: the runner's file is among what it scans."""
    assert FILES[0] in set(ct.python_files([REPO / "pipeline"]))


# ---------------------------------------------------------------- (b) the cuda-python surface
def _called_runtime_names() -> set[str]:
    """Runtime functions and names cuda.py uses: call("name", ...) and runtime().name / rt.name."""
    tree = ast.parse(FILES[1].read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "call" and node.args
                and isinstance(node.args[0], ast.Constant)):
            out.add(node.args[0].value)
        elif isinstance(node, ast.Attribute) and node.attr.startswith("cuda") and (
                (isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "runtime")
                or (isinstance(node.value, ast.Name) and node.value.id == "rt")):
            out.add(node.attr)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_memcpy_kind"
              and node.args and isinstance(node.args[0], ast.Constant)):
            out.add(f"cudaMemcpyKind.{node.args[0].value}")
    return out


def test_every_cuda_runtime_name_used_exists_in_the_installed_cuda_python() -> None:
    try:
        rt = cb.runtime()
    except cb.CudaError as e:
        pytest.skip(str(e))
    used = _called_runtime_names()
    declared = set(cb.RUNTIME_FUNCTIONS) | set(cb.RUNTIME_NAMES)
    plain = {n for n in used if "." not in n}
    assert plain <= declared, f"used but not declared in RUNTIME_FUNCTIONS/RUNTIME_NAMES: {sorted(plain - declared)}"
    assert {"cudaMalloc", "cudaMemcpyAsync", "cudaStreamBeginCapture", "cudaGraphLaunch", "cudaEventElapsedTime"} <= used
    missing = [n for n in sorted(declared | used) if not trt_backend.has_name(rt, n)]
    assert not missing, f"cuda-python {_cuda_python_version()} lacks {missing}"
    assert trt_backend.has_name(rt, "cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal")


def _cuda_python_version() -> str:
    import importlib.metadata as md

    for dist in ("cuda-bindings", "cuda-python"):
        try:
            return f"{dist} {md.version(dist)}"
        except md.PackageNotFoundError:
            continue
    return "unknown"


@pytest.mark.skipif(GPU_OK, reason="a GPU is present: the gpu tests run the wrappers for real")
def test_each_wrapper_reaches_cuda_with_arguments_the_bindings_accept() -> None:
    """Without a driver every runtime call fails with CUDA's own error, after the bindings have parsed its
    arguments: a wrong argument type would raise TypeError instead. Handles are the bindings' null handles."""
    try:
        rt = cb.runtime()
    except cb.CudaError as e:
        pytest.skip(str(e))
    stream = object.__new__(cb.Stream)
    stream.handle = rt.cudaStream_t()
    ev, ev2 = object.__new__(cb.Event), object.__new__(cb.Event)
    ev.handle, ev2.handle = rt.cudaEvent_t(), rt.cudaEvent_t()
    buf = object.__new__(cb.DeviceBuffer)
    buf.ptr, buf.nbytes = 0x1000, 16
    host = np.zeros(4, np.float32)
    graph = cb.CudaGraph()
    calls = [
        lambda: cb.DeviceBuffer((2, 3), np.float32), lambda: cb.HostBuffer((2,), np.int64), cb.Stream, cb.Event,
        lambda: cb.copy_to_device(buf, host, stream), lambda: cb.copy_to_host(host, buf, stream),
        lambda: cb.copy_device_to_device(buf, 0x2000, 16, stream), stream.synchronize,
        lambda: ev.record(stream), ev.synchronize, lambda: ev2.elapsed_ms(ev), cb.device_info,
        lambda: graph.capture(stream).__enter__(), lambda: cb.call("cudaGraphLaunch", rt.cudaGraphExec_t(), stream.handle),
        lambda: cb.call("cudaGraphInstantiateWithFlags", rt.cudaGraph_t(), 0),
        lambda: cb.call("cudaStreamEndCapture", stream.handle), lambda: cb.call("cudaFreeHost", 0x1000),
    ]
    for f in calls:
        with pytest.raises(cb.CudaError) as info:
            f()
        msg = str(info.value)
        assert "\n" not in msg and ("cudaErrorInsufficientDriver" in msg or "cudaErrorNoDevice" in msg), msg
    ok, why = cb.gpu_available()
    assert not ok and why.startswith("no usable CUDA GPU: cudaGetDeviceCount failed: cudaError") and "\n" not in why


@pytest.mark.parametrize("engines, events, where", [
    (4, 2, ["rec0", "run0", "run1", "run2", "run3", "rec1"]),  # the whole step: one pair, whatever the stage count
    (4, 5, ["rec0", "run0", "rec1", "run1", "rec2", "run2", "rec3", "run3", "rec4"]),  # per stage
    (1, 2, ["rec0", "run0", "rec1"]),
])
def test_enqueue_records_one_pair_around_the_step_or_one_event_per_stage(engines: int, events: int,
                                                                          where: list[str]) -> None:
    """Where enqueue() records its events among the engines (the latency stage times every case with one pair and
    takes per-stage times with n + 1): stand-ins record the order; the engines and events themselves need a GPU."""
    log: list[str] = []

    class Engine:
        def __init__(self, i: int) -> None:
            self.i = i

        def enqueue(self, stream_ptr: int) -> None:
            log.append(f"run{self.i}")

    class Event:
        def __init__(self, i: int) -> None:
            self.i = i

        def record(self, stream: object) -> None:
            log.append(f"rec{self.i}")

    runner = object.__new__(trt_runner.TensorRTRunner)
    runner.engines = [Engine(i) for i in range(engines)]
    runner.stream = object.__new__(cb.Stream)
    runner.stream.handle = 0
    runner.enqueue([Event(i) for i in range(events)])  # type: ignore[list-item]
    assert log == where
    with pytest.raises(ValueError, match="takes 2 or"):
        runner.enqueue([Event(i) for i in range(3)] if engines == 4 else [Event(0)])  # type: ignore[list-item]


def test_without_cuda_python_the_error_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cb, "_runtime", None)
    monkeypatch.setattr(cb, "MODULES", ("no_such_cuda.runtime",))
    with pytest.raises(cb.CudaError, match=r"cuda-python is not installed .*pip install -e \.\[cuda12\]` on JetPack 6"):
        cb.runtime()
    ok, why = cb.gpu_available()
    assert not ok and "cuda-python is not installed" in why


# ---------------------------------------------------------------- (d) refusals before any CUDA call
needs_rtx = pytest.mark.skipif(rtx is None, reason="TensorRT for RTX is not installed (make setup on x86-64)")


def _relu_plan() -> bytes:
    """A one-Relu engine built by the real TensorRT-RTX builder (needs no GPU)."""
    return rtx_plans.relu_plan(rtx)


@pytest.fixture(scope="module")
def relu_plan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if rtx is None:
        pytest.skip("TensorRT for RTX is not installed (make setup on x86-64)")
    path = tmp_path_factory.mktemp("plans") / "relu.plan"
    path.write_bytes(_relu_plan())
    return path


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fails the test on any CUDA call or deserialization; returns the log of attempts."""
    attempts: list[str] = []

    def refuse(name: str, *args: object) -> None:
        attempts.append(name)
        raise AssertionError(f"CUDA call {name} before the refusal")

    def no_engine(self: object, *args: object) -> None:
        attempts.append("deserialize")
        raise AssertionError("deserialization before the refusal")

    monkeypatch.setattr(cb, "call", refuse)
    monkeypatch.setattr(trt_runner.Engine, "__init__", no_engine)
    return attempts


@needs_rtx
def test_a_plan_from_another_release_is_refused_from_its_header(relu_plan: Path, tmp_path: Path,
                                                                 no_cuda: list[str]) -> None:
    data = bytearray(relu_plan.read_bytes())
    data[25] += 1  # the minor version byte, as tests/test_plan_header.py edits it
    edited = tmp_path / "stage0.plan"
    edited.write_bytes(data)
    b = trt_backend.load("tensorrt-rtx")
    major, minor, patch = (int(v) for v in rtx.__version__.split(".")[:3])
    with pytest.raises(DvitError) as info:
        trt_runner.TensorRTRunner([("stage0", edited)], b)
    assert str(info.value) == (f"rebuild: stage0.plan was built by TensorRT-RTX {major}.{minor + 1}.{patch}, "
                               f"this device runs {rtx.__version__}")
    with pytest.raises(DvitError) as info:  # the backend is taken from the header when none is given
        trt_runner.TensorRTRunner([("stage0", edited)])
    assert str(info.value).startswith("rebuild: stage0.plan was built by TensorRT-RTX")
    assert no_cuda == []


@needs_rtx
def test_a_full_tensorrt_plan_is_refused_by_tensorrt_rtx(tmp_path: Path, no_cuda: list[str]) -> None:
    """SYNTHESIZED full-TensorRT header (tests/test_plan_header.py's layout): no full TensorRT here to build one."""
    plan = tmp_path / "fused.plan"
    plan.write_bytes((b"ftrt" + struct.pack("<III", 0, 239, 0) + struct.pack("<Q", 4160) + bytes((10, 13, 3)) + b"\0")
                     .ljust(4160, b"\0"))
    with pytest.raises(DvitError) as info:
        trt_runner.TensorRTRunner([("fused", plan)], trt_backend.load("tensorrt-rtx"))
    msg = str(info.value)
    assert msg.startswith("rebuild: fused.plan was built by TensorRT 10.13.3") and "\n" not in msg
    junk = tmp_path / "junk.plan"
    junk.write_bytes(b"\x08\x08" + bytes(80))
    with pytest.raises(DvitError, match="junk.plan is not a TensorRT plan"):
        trt_runner.TensorRTRunner([("junk", junk)])
    with pytest.raises(DvitError, match=r"engine .*missing.plan not found: build it with `dvit build`"):
        trt_runner.TensorRTRunner([("x", tmp_path / "missing.plan")])
    assert no_cuda == []


@needs_rtx
def test_a_missing_plugin_library_names_make_plugins(relu_plan: Path, tmp_path: Path, no_cuda: list[str]) -> None:
    with pytest.raises(DvitError) as info:
        trt_runner.TensorRTRunner([("stage1", relu_plan)], trt_backend.load("tensorrt-rtx"),
                                  plugin_library=tmp_path / "libdvit_trt_plugins.so")
    msg = str(info.value)
    assert "libdvit_trt_plugins.so not found" in msg and "`make plugins`" in msg and "\n" not in msg
    assert no_cuda == []


def test_the_plugin_library_an_engine_set_needs(tmp_path: Path) -> None:
    class Set:  # the two things plugins.for_graph_set reads from a GraphSet
        def __init__(self, manifest: dict, uses_plugin: bool) -> None:
            self.manifest, self.uses_plugin, self.root = manifest, uses_plugin, tmp_path

    (tmp_path / "lib.so").write_bytes(b"")
    assert plugins.for_graph_set(Set({}, False)) is None
    assert plugins.for_graph_set(Set({}, True)) == plugins.DEFAULT_SEARCH[0]
    assert plugins.for_graph_set(Set({"plugin_library": "lib.so"}, True)) == tmp_path / "lib.so"
    assert plugins.for_graph_set(Set({"plugin_library": {"file": "lib.so"}}, True)) == tmp_path / "lib.so"
    assert plugins.for_graph_set(Set({}, True), "/x/y.so") == Path("/x/y.so")


# ---------------------------------------------------------------- (c) real engines on a GPU
def _gpu_backend() -> trt_backend.Backend:
    """Full TensorRT where installed, else TensorRT-RTX when it supports this GPU; skip otherwise."""
    try:
        return trt_backend.load("tensorrt")
    except trt_backend.BackendError:
        pass
    try:
        b = trt_backend.load("tensorrt-rtx")
    except trt_backend.BackendError as e:
        pytest.skip(f"neither TensorRT nor TensorRT-RTX is installed ({e})")
    cc = cb.device_info()["compute_capability"].replace(".", "")
    if not trt_backend.has_name(b.trt, f"ComputeCapability.SM{cc}"):
        pytest.skip(f"TensorRT-RTX {b.version} does not run on sm_{cc} and full TensorRT is not installed")
    return b


def _build_plan(b: trt_backend.Backend, onnx_path: Path) -> bytes:
    builder = trt_backend.create_builder(b, "ERROR")
    network = trt_backend.create_network(b, builder)
    parser = trt_backend.parse_onnx(b, network, onnx_path)
    config = builder.create_builder_config()
    plan = trt_backend.build_serialized(b, builder, network, config)
    del parser
    return plan


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if not GPU_OK:
        pytest.skip(GPU_WHY)
    from test_latency import write_engine_set
    from test_precision import make_tiny_export

    b = _gpu_backend()
    root = tmp_path_factory.mktemp("engines")
    export, _ = make_tiny_export(root, batch_sizes=(2,))
    out = write_engine_set(export, root / "engines", lambda p: _build_plan(b, p))
    return {"backend": b, "export": export, "engines": out}


@gpu
@pytest.mark.gpu
def test_engines_match_onnx_runtime_chain_fused_and_graph_replay(engines: dict) -> None:
    from pipeline.backend import graph_runners
    from pipeline.graphset import GraphSet

    x = {"images": np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)}
    with graph_runners(GraphSet.load(engines["export"]), 2) as ort:
        want_chain, want_fused = ort.chain.infer(x), ort.fused.infer(x)
        chain_names = ort.chain.output_names
    with graph_runners(GraphSet.load(engines["engines"]), 2, device_chain=True) as trt:
        chain, fused = trt.chain, trt.fused
        assert chain.output_names == chain_names and chain.batch == 2
        got = chain.infer(x)
        for k, v in want_chain.items():
            if k.startswith("kept_indices"):
                assert np.array_equal(got[k], v), k
            else:
                np.testing.assert_allclose(got[k], v, rtol=1e-3, atol=1e-3, err_msg=k)
        got_fused = fused.infer(x)
        np.testing.assert_allclose(got_fused["logits"], want_fused["logits"], rtol=1e-3, atol=1e-3)
        # the chain hands tensors over on the device: stage 1's input address is stage 0's output buffer
        for i in range(1, len(chain.engines)):
            bound = chain.engines[i].context.get_tensor_address(f"tokens_{i}")
            assert bound == chain.device_buffer(f"tokens_{i}").ptr
        chain.capture_graph()
        chain.set_inputs(x)
        chain.launch()
        chain.fetch_outputs()
        chain.synchronize()
        replay = chain.infer(x)
        np.testing.assert_array_equal(replay["logits"], got["logits"])
        events = [cb.Event() for _ in range(len(chain.engines) + 1)]
        chain.enqueue(events)
        chain.synchronize()
        assert all(events[i + 1].elapsed_ms(events[i]) >= 0 for i in range(len(chain.engines)))
        for e in events:
            e.destroy()
    assert trt.chain.engines == [] and trt.fused.engines == []  # closed on leaving the block


@gpu
@pytest.mark.gpu
def test_torch_cuda_tensors_bind_zero_copy(engines: dict) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    from pipeline.graphset import GraphSet

    g = GraphSet.load(engines["engines"]).batch(2)
    r = trt_runner.TensorRTRunner([("fused", g.fused.path)], engines["backend"])
    try:
        x = np.random.default_rng(1).standard_normal((2, 1, 28, 28)).astype(np.float32)
        want = r.infer({"images": x})["logits"]
        t = torch.from_numpy(x).cuda()
        torch.cuda.synchronize()
        r.set_inputs({"images": t})
        r.enqueue()
        r.fetch_outputs()
        r.synchronize()
        np.testing.assert_array_equal(r._host["logits"].array, want)
    finally:
        r.close()


@gpu
@pytest.mark.gpu
def test_dvit_latency_times_engines(engines: dict) -> None:
    from pipeline.latency import measure_latency
    from pipeline.latency.timing import TimingSettings

    r = measure_latency([engines["engines"]], backend="tensorrt", settings=TimingSettings(0.05, 0.1, 5, 2),
                        progress=False)
    assert r["unavailable"] == [] and r["machine"]["gpu"]["name"]
    variants = {(x["model"], x["mode"], x["io"], x["cuda_graph"]) for x in r["runs"]}
    assert ("pruned", "chain", "host", False) in variants and ("pruned", "chain", "device", True) in variants
    chain = next(x for x in r["runs"] if (x["mode"], x["io"], x["cuda_graph"]) == ("chain", "device", False))
    assert len(chain["stages"]) == 4 and chain["gpu"]["iterations"] == chain["end_to_end"]["iterations"]
    # the backend's version, read after the runners imported it
    assert {"tensorrt", "tensorrt_rtx"} & set(r["machine"]["versions"])
