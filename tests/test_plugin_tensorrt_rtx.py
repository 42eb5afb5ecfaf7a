"""The DvitTopKGather plugin inside a real TensorRT builder: TensorRT for RTX, whose ahead-of-time build needs no GPU.

For every TensorRT header set the plugin is built against (the builds of tests/test_plugin_build.py, shared through
plugin_build_helpers), in a fresh interpreter per route (plugin registration is process-wide and cannot be undone
for a ctypes-loaded library; a crash must not take pytest down):

- IPluginRegistry::loadLibrary route: the creator appears in the registry; ONNX graphs with a DvitTopKGather node
  (built here with onnx.helper, the node as pipeline/plugin_pass.py writes it) parse and build into serialized
  engines for FP32, FP16 and mixed tokens, and with a dynamic batch (configurePlugin sees the profile); k > N and
  INT8 tokens are refused with TensorRT's own errors, and our message naming the problem reaches the application's
  logger (11.x headers, through the ILoggerFinder TensorRT hands over) or stderr (10.x headers, whose ILoggerFinder
  layout differs from TensorRT-RTX's, so the plugin does not call it).
- ctypes route (dvit_trt_register_plugins after ctypes.CDLL) and the load-time-registering library: the creator is
  registered into TensorRT-RTX's registry with the 11.x headers; with 10.x headers (a different IPluginRegistry
  vtable) registration is refused with an explanation instead of crashing.

Skips, saying why, only where tensorrt_rtx is not importable (or nothing can be compiled).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT for RTX (pip extra tensorrt-rtx) is not installed")

# After the skip: a device (Jetson) install has neither onnx nor tensorrt_rtx.
from onnx import TensorProto, helper
from plugin_build_helpers import (
    build_plugin,
    header_set_id,
    no_headers_reason,
    trt_include_dirs,
)

PLUGIN = ("DvitTopKGather", "1", "dvit")
RESULT_PREFIX = "DVIT_RESULT "
B, N, C, K = 2, 196, 64, 137  # DeiT-S's first pruning stage (keep ratio 0.7), narrow C to keep the build quick


# ---------------------------------------------------------------------------------------------------------------
# Worker side: runs in a fresh interpreter (python tests/test_plugin_tensorrt_rtx.py <route> <library>)
# ---------------------------------------------------------------------------------------------------------------


def _model(k: int = K, n: int = N, scores: int = TensorProto.FLOAT, tokens: int = TensorProto.FLOAT,
           batch: int | str = B, patches: int | str | None = None) -> bytes:
    """scores [B, N] + tokens [B, N+1, C] -> DvitTopKGather -> kept_tokens [B, k+1, C], kept_indices [B, k]."""
    n_dim = n if patches is None else patches
    n1_dim = n + 1 if patches is None else f"{patches}_plus_1"
    node = helper.make_node("DvitTopKGather", ["scores", "tokens"], ["kept_tokens", "kept_indices"], name="keep_0",
                            domain="dvit", k=k, plugin_version="1", plugin_namespace="dvit")
    graph = helper.make_graph(
        [node], "dvit_keep",
        [helper.make_tensor_value_info("scores", scores, [batch, n_dim]),
         helper.make_tensor_value_info("tokens", tokens, [batch, n1_dim, C])],
        [helper.make_tensor_value_info("kept_tokens", tokens, [batch, k + 1, C]),
         helper.make_tensor_value_info("kept_indices", TensorProto.INT32, [batch, k])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("dvit", 1)])
    model.ir_version = 10  # what the plugin pass writes as well; the parser reads IR <= 10
    return model.SerializeToString()


class _Capture(trt.ILogger):
    def __init__(self) -> None:
        trt.ILogger.__init__(self)
        self.errors: list[str] = []

    def log(self, severity, msg) -> None:
        if severity <= trt.ILogger.Severity.ERROR:
            self.errors.append(msg)


def _build(model: bytes, profile: dict | None = None) -> dict:
    """Parses the model into a strongly typed network (the only kind TensorRT-RTX has) and builds it."""
    logger = _Capture()
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    start = time.perf_counter()
    result: dict = {"parsed": bool(parser.parse(model)), "engine_bytes": None, "outputs": []}
    result["parser_errors"] = [str(parser.get_error(i)) for i in range(parser.num_errors)]
    if result["parsed"]:
        for i in range(network.num_outputs):
            out = network.get_output(i)
            result["outputs"].append([out.name, list(out.shape), str(out.dtype)])
        result["layers"] = [str(network.get_layer(i).type) for i in range(network.num_layers)]
        config = builder.create_builder_config()
        config.builder_optimization_level = 0  # nothing to tune in a one-plugin graph
        if profile:
            opt = builder.create_optimization_profile()
            for name, shapes in profile.items():
                opt.set_shape(name, *shapes)
            config.add_optimization_profile(opt)
        engine = builder.build_serialized_network(network, config)
        result["engine_bytes"] = None if engine is None else engine.nbytes
    result["seconds"] = round(time.perf_counter() - start, 3)
    result["errors"] = logger.errors
    return result


def _creator_state() -> dict:
    registry = trt.get_plugin_registry()
    creator = registry.get_creator(*PLUGIN)
    listed = [[c.name, c.plugin_version, c.plugin_namespace] for c in registry.all_creators]
    return {"creator": None if creator is None else [creator.name, creator.plugin_version, creator.plugin_namespace,
                                                      [f.name for f in creator.field_names]],
            "listed": list(PLUGIN) in listed}


def _worker(route: str, library: str) -> dict:
    import ctypes

    result: dict = {"route": route}
    if route == "load_library":
        handle = trt.get_plugin_registry().load_library(library)
        result["loaded"] = handle is not None
        result.update(_creator_state())
        f16, f32, i8 = TensorProto.FLOAT16, TensorProto.FLOAT, TensorProto.INT8
        result["cases"] = {
            "fp32": _build(_model()),
            "fp16": _build(_model(scores=f16, tokens=f16)),
            "fp32-scores-fp16-tokens": _build(_model(scores=f32, tokens=f16)),
            "dynamic-batch-fp16": _build(_model(scores=f16, tokens=f16, batch="B"), profile={
                "scores": [(1, N), (4, N), (8, N)], "tokens": [(1, N + 1, C), (4, N + 1, C), (8, N + 1, C)]}),
            "k>N": _build(_model(k=N + 4)),
            "int8-tokens": _build(_model(tokens=i8)),
            # N known only from the profile: getOutputShapes cannot check k, configurePlugin must.
            "profile-min-N<k": _build(_model(patches="N"), profile={
                "scores": [(B, 100), (B, N), (B, N)], "tokens": [(B, 101, C), (B, N + 1, C), (B, N + 1, C)]}),
        }
    else:
        lib = ctypes.CDLL(library)  # the static variant registers itself here
        lib.dvit_trt_plugin_last_error.restype = ctypes.c_char_p
        if route == "ctypes":
            result["rc"] = lib.dvit_trt_register_plugins()
            result["rc_again"] = lib.dvit_trt_register_plugins()  # idempotent
        result["last_error"] = lib.dvit_trt_plugin_last_error().decode()
        result.update(_creator_state())
        if result["creator"] is not None:
            result["cases"] = {"fp16": _build(_model(scores=TensorProto.FLOAT16, tokens=TensorProto.FLOAT16)),
                               "k>N": _build(_model(k=N + 4))}
    return result


# ---------------------------------------------------------------------------------------------------------------
# Test side
# ---------------------------------------------------------------------------------------------------------------


def _run_worker(route: str, library: Path) -> tuple[dict, str]:
    proc = subprocess.run([sys.executable, __file__, route, str(library)], capture_output=True, text=True,
                          timeout=300, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    assert proc.returncode == 0 and lines, (
        f"worker '{route}' exited with {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX):]), proc.stderr


@pytest.fixture(scope="session")
def rtx_parser_can_load_plugins() -> None:
    """The ONNX parser dlopens libtensorrt_rtx.so (unversioned) when it meets a plugin node; without the link
    `make setup` creates the process aborts."""
    import tensorrt_rtx_libs

    libs = Path(tensorrt_rtx_libs.__path__[0])
    if not (libs / "libtensorrt_rtx.so").exists():
        pytest.fail(f"{libs}/libtensorrt_rtx.so is missing (the ONNX parser would abort on a plugin node): "
                    "run `make link-tensorrt-rtx` (part of `make setup`)")


@pytest.fixture(scope="module", params=trt_include_dirs() or [None], ids=header_set_id)
def plugin(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    if request.param is None:
        pytest.skip(no_headers_reason())
    return build_plugin(request.param, tmp_path_factory)


@pytest.fixture(scope="module")
def loaded(plugin: dict, rtx_parser_can_load_plugins: None) -> tuple[dict, str]:
    return _run_worker("load_library", plugin["dir"] / "libdvit_trt_plugins.so")


def _our_message_shown(plugin: dict, loaded: tuple[dict, str], case: str, words: str) -> None:
    """Our own message reaches the application's logger (11.x headers) or stderr (10.x), exactly once."""
    result, stderr = loaded
    logged = [e for e in result["cases"][case]["errors"] if words in e]
    if plugin["major"] >= 11:
        assert len(logged) == 1 and words not in stderr, (logged, stderr[-2000:])
    else:
        assert not logged and stderr.count(words) == 1, stderr[-2000:]


def test_load_library_registers_the_creator(loaded: tuple[dict, str]) -> None:
    result, _ = loaded
    assert result["loaded"] and result["listed"]
    assert result["creator"] == [*PLUGIN, ["k"]]


@pytest.mark.parametrize("case", ["fp32", "fp16", "fp32-scores-fp16-tokens", "dynamic-batch-fp16"])
def test_engine_builds(loaded: tuple[dict, str], case: str) -> None:
    build = loaded[0]["cases"][case]
    assert build["parsed"], build["parser_errors"]
    assert build["layers"] == ["LayerType.PLUGIN_V3"]
    assert build["engine_bytes"], build["errors"]
    tokens_type = "DataType.FLOAT" if case == "fp32" else "DataType.HALF"
    batch = -1 if case.startswith("dynamic") else B
    assert build["outputs"] == [["kept_tokens", [batch, K + 1, C], tokens_type],
                                ["kept_indices", [batch, K], "DataType.INT32"]]
    assert build["seconds"] < 30, build["seconds"]


def test_k_greater_than_n_is_refused_by_tensorrt(plugin: dict, loaded: tuple[dict, str]) -> None:
    build = loaded[0]["cases"]["k>N"]
    assert not build["parsed"]
    text = "\n".join(build["parser_errors"])
    assert "keep_0" in text and "output shape computation failed" in text, text
    _our_message_shown(plugin, loaded, "k>N", f"getOutputShapes: k={N + 4} is out of range, need 1 <= k <= N = {N}")


def test_k_greater_than_profile_minimum_is_refused_at_build(plugin: dict, loaded: tuple[dict, str]) -> None:
    build = loaded[0]["cases"]["profile-min-N<k"]
    assert build["parsed"] and build["engine_bytes"] is None
    assert any("configurePlugin" in e and "non-zero return code" in e for e in build["errors"]), build["errors"]
    _our_message_shown(plugin, loaded, "profile-min-N<k",
                       f"configurePlugin (profile minimum): DvitTopKGather: k={K} is out of range")


def test_int8_tokens_are_refused_by_tensorrt(plugin: dict, loaded: tuple[dict, str]) -> None:
    build = loaded[0]["cases"]["int8-tokens"]
    assert not build["parsed"]
    text = "\n".join(build["parser_errors"])
    assert "getOutputDataTypes reported a non-zero return code" in text, text
    _our_message_shown(plugin, loaded, "int8-tokens",
                       "input 1 (tokens) is INT8; DvitTopKGather supports FLOAT and HALF only")


@pytest.mark.parametrize("variant", ["ctypes", "static"])
def test_ctypes_route_registers_into_tensorrt_rtx(plugin: dict, rtx_parser_can_load_plugins: None,
                                                  variant: str) -> None:
    library = "libdvit_trt_plugins.so" if variant == "ctypes" else "libdvit_trt_plugins_static.so"
    result, stderr = _run_worker(variant, plugin["dir"] / library)
    if plugin["major"] >= 11:
        assert result.get("rc", 0) == 0 and result.get("rc_again", 0) == 0, result["last_error"]
        assert result["listed"] and result["creator"] == [*PLUGIN, ["k"]]
        build = result["cases"]["fp16"]
        assert build["parsed"] and build["engine_bytes"], (build["parser_errors"], build["errors"])
        # No logger finder on this route, and TensorRT-RTX's global logger shows nothing: our message goes to stderr.
        assert not result["cases"]["k>N"]["parsed"]
        assert stderr.count(f"getOutputShapes: k={N + 4} is out of range") == 1, stderr[-2000:]
    else:
        # 10.x headers: TensorRT-RTX's registry has the 11.x vtable. Refused, with the way out, not a crash.
        assert result.get("rc", 5) == 5, result
        assert result["creator"] is None and not result["listed"]
        for words in ("libtensorrt_rtx.so.1 is loaded", "TensorRT 10 headers", "loadLibrary"):
            assert words in result["last_error"], result["last_error"]
        assert "libtensorrt_rtx.so.1 is loaded" in stderr


if __name__ == "__main__":
    print(RESULT_PREFIX + json.dumps(_worker(sys.argv[1], sys.argv[2])), flush=True)
