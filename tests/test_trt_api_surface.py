"""The TensorRT Python API the project uses exists in 10.3, 10.13, 11.1 and the installed TensorRT-RTX.

Runs tools/check_trt_api.py: the names come from NVIDIA's real pybind11 sources of each release (under
$DVIT_TRT_OSS_ROOT or ../shared/tensorrt-oss, never copied into the project) and from the installed
tensorrt_rtx; the uses from the project's own code. Skips, saying why, where the sources are absent.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from script_module import load_script

from pipeline.backend import tensorrt as tb

REPO = Path(__file__).resolve().parents[1]
ct = load_script("tools/check_trt_api.py")

HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
_missing = [r for r in ct.RELEASES if not (ct.oss_root() / r / "python" / "src").is_dir()]
pytestmark = pytest.mark.skipif(
    bool(_missing), reason=f"TensorRT binding sources {', '.join(_missing)} not found under {ct.oss_root()} "
    f"(set ${ct.ENV_ROOT})")

# Members TensorRT-RTX 1.7.1 has on classes it shares with TensorRT 11.1 that 11.1 lacks (its own features).
# Everything else the installed module defines on those classes must be found by the source parser: this is the
# parser's recall check. A TensorRT-RTX upgrade may add entries.
RTX_ONLY_MEMBERS = {
    "BuilderFlag": {"REQUIRE_USER_ALLOCATION"},
    "IBuilderConfig": {"get_compute_capability", "num_compute_capabilities", "set_compute_capability"},
    "ICudaEngine": {"create_weights_manager", "load_weights", "load_weights_async", "unload_weights",
                    "weights_loaded"},
    "IExecutionContext": {"is_stream_capturable"},
    "IOptimizationProfile": {"profile_stream"},
    "IRuntimeConfig": {"create_runtime_cache", "cuda_graph_strategy", "dynamic_shapes_kernel_specialization_strategy",
                       "get_runtime_cache", "set_runtime_cache"},
    "Refitter": {"release_refit_resources"},
    "Runtime": {"defer_weights_loading", "dla_workspace_allocation_strategy", "engine_header_size",
                "get_engine_validity"},
}


@pytest.fixture(scope="module")
def releases() -> dict[str, ct.Surface]:
    return {r: ct.parse_bindings(ct.oss_root() / r / "python" / "src", r) for r in ct.RELEASES}


@pytest.fixture(scope="module")
def surfaces(releases) -> list[ct.Surface]:
    out = list(releases.values())
    if HAS_RTX:
        import tensorrt_rtx

        out.append(ct.introspect_module(tensorrt_rtx, "TensorRT-RTX (installed)"))
    return out


def test_parsed_bindings_know_what_changed_between_releases(releases):
    v103, v1013, v111 = releases["v10.3.0"], releases["v10.13.3"], releases["v11.1"]
    everywhere = ["Builder.build_serialized_network", "IBuilderConfig.set_memory_pool_limit", "MemoryPoolType.WORKSPACE",
                  "Logger.WARNING", "ILogger.Severity.ERROR", "OnnxParser.parse_from_file", "ParserError.node_name",
                  "NetworkDefinitionCreationFlag.STRONGLY_TYPED", "IBuilderConfig.builder_optimization_level",
                  "ICudaEngine.create_engine_inspector", "DataType.HALF.itemsize", "__version__", "float16",
                  "PluginFieldCollection.append", "get_plugin_registry"]
    for name in everywhere:
        assert all(s.has(name) for s in (v103, v1013, v111)), name
    for name in ["BuilderFlag.FP16", "BuilderFlag.INT8", "NetworkDefinitionCreationFlag.EXPLICIT_BATCH",
                 "Builder.platform_has_fast_fp16", "IInt8EntropyCalibrator2"]:  # removed in 11
        assert v103.has(name) and v1013.has(name) and not v111.has(name), name
    assert v1013.has("BuilderFlag.FP4") and not v103.has("BuilderFlag.FP4")  # added in 10.x after 10.3
    assert not any(s.has("IBuilderConfig.set_compute_capability") for s in (v103, v1013, v111))
    assert not v111.has("BuilderFlag.FAST_MATH_X") and not v111.has("IBuilderConfig.set_flag.bits")


@pytest.mark.skipif(not HAS_RTX, reason="TensorRT for RTX is not installed: no installed module to compare with")
def test_source_parser_finds_every_shared_member_the_installed_module_has(releases):
    import tensorrt_rtx

    rtx = ct.introspect_module(tensorrt_rtx, "rtx")
    v111 = releases["v11.1"]
    shared = set(v111.members) & set(rtx.members)
    assert len(shared) > 150
    missed = {}
    for cls in sorted(shared):
        have = {m for m in rtx.class_members(cls) if not m.startswith("_")}
        if cls in rtx.enums:
            have -= ct.ENUM_IMPLICIT
        if extra := have - v111.class_members(cls) - RTX_ONLY_MEMBERS.get(cls, set()):
            missed[cls] = sorted(extra)
    assert not missed, f"names the parser did not find in the 11.1 sources: {missed}"


def test_capability_probes_against_each_release(releases, surfaces):
    expected = {  # capability: (10.3, 10.13, 11.1) as probed from the bindings
        "strongly_typed_flag": (True, True, True), "weak_typing": (True, True, False),
        "memory_pool_limit": (True, True, True), "builder_optimization_level": (True, True, True),
        "serialized_build": (True, True, True), "timing_cache": (True, True, True), "dla": (True, True, True),
        "version_compatible": (True, True, True), "engine_inspector": (True, True, True),
        "compute_capability_targets": (False, False, False), "plugin_v3_layer": (True, True, True),
        "engine_validity": (False, False, False),
    }
    assert set(expected) == set(tb.CAPABILITIES)
    got = [tb.probe_names(s.has, rtx=False) for s in releases.values()]
    assert {cap: tuple(g[cap] for g in got) for cap in expected} == expected
    assert ct.check_capabilities(surfaces) == []  # every name the table lists exists somewhere


def test_project_code_uses_only_names_every_release_has_or_probes(surfaces):
    uses, findings = ct.run([REPO / "pipeline"], surfaces)
    assert not findings, "\n".join(map(str, findings))
    names = {u.name for u in uses if u.file.endswith("backend/tensorrt/builder.py")}
    assert {"IBuilderConfig.set_memory_pool_limit", "ComputeCapability", "NetworkDefinitionCreationFlag.STRONGLY_TYPED",
            "Builder.build_serialized_network", "IBuilderConfig.DLA_core"} <= names


# What a DLA engine's build calls (pipeline/backend/tensorrt/builder.py: apply_settings, dla_capable_layers).
DLA_NAMES = {"Builder.num_DLA_cores", "IBuilderConfig.default_device_type", "DeviceType.DLA", "IBuilderConfig.DLA_core",
             "IBuilderConfig.set_flag", "BuilderFlag.GPU_FALLBACK", "INetworkDefinition.num_layers",
             "INetworkDefinition.get_layer", "ILayer", "IBuilderConfig.can_run_on_DLA"}


def test_the_dla_build_uses_names_every_release_has_and_only_behind_the_dla_probe(releases, surfaces):
    """Per-stage DLA placement sets DLA_core, default_device_type = DeviceType.DLA and GPU_FALLBACK on the DLA
    engines only and counts the layers the DLA can run: every name exists in 10.3 (JetPack 6, the Orin DLA's
    release), 10.13 and 11.1, and each use sits in a function that asks has("dla") (TensorRT-RTX has none)."""
    for label, surface in releases.items():
        assert not [n for n in DLA_NAMES if not surface.has(n)], label
    uses, findings = ct.run([REPO / "pipeline" / "backend" / "tensorrt" / "builder.py"], surfaces)
    assert not findings, "\n".join(map(str, findings))
    dla_uses = [u for u in uses if u.name in DLA_NAMES - {"IBuilderConfig.set_flag", "ILayer"}]
    assert {u.name for u in dla_uses} == DLA_NAMES - {"IBuilderConfig.set_flag", "ILayer"}
    assert all("dla" in u.guards for u in dla_uses), [(u.name, u.function) for u in dla_uses if "dla" not in u.guards]


def _check(tmp_path: Path, surfaces: list[ct.Surface], code: str) -> list[str]:
    path = tmp_path / "stage.py"
    path.write_text(textwrap.dedent(code))
    _, findings = ct.run([path], surfaces)
    return [f.message for f in findings]


def test_an_invented_name_is_reported(tmp_path, surfaces):
    found = _check(tmp_path, surfaces, """
        def configure(b, config: trt.IBuilderConfig) -> None:
            trt = b.trt
            config.set_flag(trt.BuilderFlag.FAST_MATH_X)
            config.set_flagz(trt.BuilderFlag.TF32)
    """)
    assert any(m.startswith("trt.BuilderFlag.FAST_MATH_X exists in no TensorRT release") for m in found), found
    assert any(m.startswith("trt.IBuilderConfig.set_flagz exists in no TensorRT release") for m in found), found
    assert len(found) == 2, found


def test_a_name_missing_from_one_release_needs_a_probe(tmp_path, surfaces):
    found = _check(tmp_path, surfaces, """
        def unguarded(b, config: trt.IBuilderConfig) -> None:
            config.set_flag(b.trt.BuilderFlag.FP16)
            b.trt.Builder.platform_has_fast_fp16

        def guarded(b, config: trt.IBuilderConfig) -> None:
            if b.has("weak_typing"):
                config.set_flag(b.trt.BuilderFlag.FP16)

        def wrong_guard(b, config: trt.IBuilderConfig) -> None:
            if b.has("dla"):
                config.set_flag(b.trt.BuilderFlag.INT8)
    """)
    assert len(found) == 3, found
    assert "trt.BuilderFlag.FP16 is missing from v11.1" in found[0] and "unguarded never asks" in found[0]
    assert 'has("weak_typing")' in found[0]
    assert "trt.Builder.platform_has_fast_fp16 is missing from v11.1" in found[1] and "CAPABILITIES" in found[1]
    assert "trt.BuilderFlag.INT8" in found[2] and "wrong_guard never asks" in found[2]


def test_code_the_check_cannot_follow_is_reported(tmp_path, surfaces):
    found = _check(tmp_path, surfaces, """
        import tensorrt as tensorrt_module
        from tensorrt import Builder

        def build(b, builder: trt.Builder, name: str) -> None:
            network = builder.create_network(0)
            n = builder.create_network(0).num_layers
            flag = getattr(b.trt.BuilderFlag, name)
            logger = tensorrt_module.Logger(tensorrt_module.Logger.WARNING)
            ok: trt.INetworkDefinition = builder.create_network(0)
            ok.num_layerz
    """)
    text = "\n".join(found)
    assert "from tensorrt import ...: use `trt.<name>`" in text
    assert "`network = ...` holds a TensorRT value: annotate it" in text
    assert "`.num_layers` on the result of a TensorRT call" in text
    assert "getattr() with a computed name on TensorRT" in text
    assert "`logger = ...` holds a TensorRT value" in text  # the module under another name is followed too
    assert "trt.INetworkDefinition.num_layerz exists in no TensorRT release" in text
    assert len(found) == 6, found


def test_cli_reports_and_exits_nonzero_on_findings(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "tools" / "check_trt_api.py")], check=False, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("checked ") and "TensorRT 10.3.0, TensorRT 10.13.3, TensorRT 11.1" in r.stdout
    bad = tmp_path / "bad.py"
    bad.write_text("def f(b):\n    return b.trt.BuilderFlag.FAST_MATH_X\n")
    r = subprocess.run([sys.executable, str(REPO / "tools" / "check_trt_api.py"), str(bad)], check=False, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1 and "bad.py:2: trt.BuilderFlag.FAST_MATH_X exists in no TensorRT release" in r.stdout


def test_classes_are_followed_through_fields_and_project_function_returns(tmp_path, surfaces):
    found = _check(tmp_path, surfaces, """
        from dataclasses import dataclass

        def make_builder(b) -> trt.Builder:
            builder: trt.Builder = b.trt.Builder(b.trt.Logger(b.trt.Logger.WARNING))
            return builder

        @dataclass
        class Loaded:
            engine: trt.ICudaEngine

            def io(self) -> int:
                return self.engine.num_io_tensors + self.engine.num_bindings

        def use(b) -> None:
            builder = make_builder(b)
            builder.create_networkk(0)
    """)
    assert len(found) == 2, found
    assert "trt.ICudaEngine.num_bindings exists in no TensorRT release" in found[0]
    assert "trt.Builder.create_networkk exists in no TensorRT release" in found[1]


def test_without_tensorrt_rtx_the_project_still_checks_clean(releases):
    """On a Jetson or a CI machine without TensorRT-RTX, the three releases alone must pass: names only
    TensorRT-RTX has (listed under capabilities) cannot be verified there and are not reported."""
    uses, findings = ct.run([REPO / "pipeline"], list(releases.values()))
    assert not findings, "\n".join(map(str, findings))
    assert any(u.name == "IBuilderConfig.set_compute_capability" for u in uses)
