"""pipeline/backend/tensorrt/ (loader, capabilities, builder) on the real TensorRT for RTX builder (no GPU needed) and the real import failures."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from onnx import TensorProto, helper, save

from pipeline import targets
from pipeline.backend import tensorrt as tb
from pipeline.backend.tensorrt import plan_header

REPO = Path(__file__).resolve().parents[1]
HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
HAS_TRT = importlib.util.find_spec("tensorrt") is not None
needs_rtx = pytest.mark.skipif(not HAS_RTX, reason="TensorRT for RTX is not installed (make setup on x86-64)")


@pytest.fixture(scope="module")
def rtx() -> tb.Backend:
    if not HAS_RTX:
        pytest.skip("TensorRT for RTX is not installed (make setup on x86-64)")
    return tb.load("tensorrt-rtx")


@pytest.fixture(scope="module")
def relu_onnx(tmp_path_factory) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("onnx") / "relu.onnx"
    save(model, path)
    return path


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here, so its absence cannot be tested")
def test_missing_tensorrt_names_what_to_install(tmp_path):
    with pytest.raises(tb.BackendError) as e:
        tb.import_backend("tensorrt", root=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "TensorRT is not installed" in msg and "pip install tensorrt" in msg
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "nv_tegra_release").write_text("# R36 (release), REVISION: 4.3\n")
    with pytest.raises(tb.BackendError) as e:
        tb.import_backend("tensorrt", root=tmp_path)
    # the device set into a venv that sees JetPack's TensorRT, never `make setup` (torch and ModelOpt on aarch64)
    assert "JetPack" in str(e.value) and "--system-site-packages" in str(e.value) and "'.[device,cuda12]'" in str(e.value)
    assert "make setup" not in str(e.value)
    assert "does not run on Jetson" in tb.install_hint("tensorrt-rtx", root=tmp_path)
    assert "tensorrt-rtx-cu13" in tb.install_hint("tensorrt-rtx", root=tmp_path / "not-a-jetson")


def test_unknown_backend_name():
    with pytest.raises(tb.BackendError, match="unknown backend 'tensorrt-llm': use one of tensorrt, tensorrt-rtx"):
        tb.import_backend("tensorrt-llm")


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_a_package_named_tensorrt_without_the_bindings_is_not_taken_for_tensorrt(tmp_path):
    """Type stubs (tensorrt-stubs) installed into site-packages make `import tensorrt` succeed as an empty package;
    the backend says so instead of failing later on trt.Builder. The situation itself: an empty `tensorrt`."""
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.py").write_text("")
    code = ("from pipeline.backend import tensorrt as tb\n"
            "try:\n    tb.load('tensorrt')\nexcept tb.BackendError as e:\n    print(e)\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO, capture_output=True, text=True, env=env, timeout=60)
    assert "which is not TensorRT (type stubs installed into site-packages?)" in r.stdout, r.stdout + r.stderr


def test_rtx_probe_matches_what_the_installed_module_has(rtx):
    assert rtx.version == rtx.trt.__version__ and rtx.label.startswith("TensorRT-RTX 1.")
    expected = {
        "strongly_typed_flag": True, "weak_typing": False, "memory_pool_limit": True,
        "builder_optimization_level": True, "serialized_build": True, "timing_cache": False, "dla": False,
        "version_compatible": False, "engine_inspector": True, "compute_capability_targets": True,
        "plugin_v3_layer": False, "engine_validity": True,
    }
    assert dict(rtx.caps) == expected
    with pytest.raises(KeyError, match="unknown capability"):
        rtx.has("fast_math")
    # STRONGLY_TYPED is 0 in TensorRT-RTX (1 in TensorRT 10.x): taken by name, the flag bit is 1 << 0
    assert int(rtx.trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 0 and tb.network_flags(rtx) == 1
    assert json.dumps(tb.describe(rtx))


def test_build_for_a_target_and_read_the_settings_back_by_name(rtx, relu_onnx):
    target = targets.load_target("desktop-rtx")
    assert tb.load_for(target).version == rtx.version
    builder = tb.create_builder(rtx)
    network = tb.create_network(rtx, builder)
    parser = tb.parse_onnx(rtx, network, relu_onnx)
    assert network.get_flag(rtx.trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    config = builder.create_builder_config()
    settings = tb.BuildSettings.from_target(target)
    assert tb.apply_settings(rtx, builder, config, settings) == []
    got = tb.config_json(rtx, config)
    assert got["compute_capabilities"] == [f"ComputeCapability.SM{sm}" for sm in target.compute_capabilities]
    assert got["workspace_bytes"] == target.workspace_mib << 20 and got["builder_optimization_level"] == 3
    assert all(isinstance(f, str) and not f.isdigit() for f in got["builder_flags"])
    assert json.loads(json.dumps(got)) == got
    plan = tb.build_serialized(rtx, builder, network, config)
    del parser
    header = plan_header.parse_header(plan[:64], plan_size=len(plan))
    assert header.backend == "tensorrt-rtx" and header.fields["compute_capabilities"] == list(target.compute_capabilities)
    assert header.version == targets.version_tuple(rtx.version)


def test_settings_json_writes_enum_names_never_numbers(rtx):
    trt = rtx.trt
    value = {
        trt.BuilderFlag.TF32: [trt.MemoryPoolType.WORKSPACE, trt.DeviceType.GPU],
        "levels": (trt.ComputeCapability.SM80, 3, None, True),
        "settings": tb.BuildSettings(workspace_bytes=1 << 20, compute_capabilities=(80,)),
    }
    out = tb.settings_json(value)
    assert out == {
        "BuilderFlag.TF32": ["MemoryPoolType.WORKSPACE", "DeviceType.GPU"],
        "levels": ["ComputeCapability.SM80", 3, None, True],
        "settings": {"workspace_bytes": 1 << 20, "optimization_level": None, "compute_capabilities": [80],
                     "dla_core": None},
    }
    assert tb.enum_name(trt.BuilderFlag.TF32) == "BuilderFlag.TF32" and tb.enum_name(6) is None
    with pytest.raises(TypeError, match="cannot convert"):
        tb.settings_json(object())


def test_settings_this_backend_cannot_take_fail_on_one_line(rtx):
    builder = tb.create_builder(rtx)
    config = builder.create_builder_config()
    with pytest.raises(tb.BackendError) as e:
        tb.apply_settings(rtx, builder, config, tb.BuildSettings(dla_core=0))
    assert "has no DLA support" in str(e.value)
    with pytest.raises(tb.BackendError) as e:
        tb.apply_settings(rtx, builder, config, tb.BuildSettings(compute_capabilities=(87,)))
    assert "cannot build for sm_87" in str(e.value) and "SM121" in str(e.value) and "\n" not in str(e.value)
    assert int(config.num_compute_capabilities) == 0  # nothing was half-applied
    assert tb.timing_cache_note(rtx) and "no timing cache" in tb.timing_cache_note(rtx)


def test_a_target_whose_versions_exclude_the_installed_backend_is_refused(rtx, tmp_path):
    d = tmp_path / "targets"
    d.mkdir()
    text = (REPO / "targets" / "desktop-rtx.toml").read_text()
    (d / "desktop-rtx.toml").write_text(text.replace('min_version = "1.7"', 'min_version = "2.0"').replace(
        'version = "1.7"', 'version = "2.0"'))
    with pytest.raises(tb.BackendError, match=r"needs TensorRT-RTX >= 2.0, this machine has 1\."):
        tb.load_for(targets.load_target("desktop-rtx", d))


def test_an_unparsable_onnx_file_is_one_line(rtx, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf")
    builder = tb.create_builder(rtx, severity="INTERNAL_ERROR")
    with pytest.raises(tb.BackendError) as e:
        tb.parse_onnx(rtx, tb.create_network(rtx, builder), bad)
    assert "cannot parse" in str(e.value) and "dvit scan" in str(e.value) and "\n" not in str(e.value)


def test_dla_settings_follow_the_target():
    agx = targets.load_target("agx-orin")
    assert tb.BuildSettings.from_target(agx).dla_core is None  # opt-in
    s = tb.BuildSettings.from_target(agx, use_dla=True, version="10.3.0.30")
    assert (s.dla_core, s.compute_capabilities, s.workspace_bytes) == (0, (), 4096 << 20)
    with pytest.raises(tb.BackendError, match=r"drives its DLA with TensorRT 10\.3, 11\.4 only, this machine has 10\.13"):
        tb.BuildSettings.from_target(agx, use_dla=True, version="10.13.3")
    with pytest.raises(tb.BackendError, match="target thor has no DLA"):
        tb.BuildSettings.from_target(targets.load_target("thor"), use_dla=True)
