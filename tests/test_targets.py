"""Target profiles (targets/*.toml, pipeline/targets.py): the shipped profiles, their validation errors, the CLI."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import targets
from pipeline.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = {"orin-nano", "orin-nx", "agx-orin", "thor", "h100", "desktop-rtx"}


def test_shipped_profiles_load_and_say_what_each_device_is():
    assert set(targets.list_targets()) == SHIPPED
    by_name = {t.name: t for t in targets.load_all()}
    for name in ("orin-nano", "orin-nx", "agx-orin"):
        t = by_name[name]
        assert (t.backend, t.compute_capabilities, t.cuda_archs, t.jetson) == ("tensorrt", (87,), ("87",), True)
        assert t.cuda_for("10.3.0.30") == ("12.6",) and t.cuda_for("11.4.1") == ("13",)  # JetPack 6 / 7
        assert t.stacks[0].jetpack == ("6.1", "6.2")
    assert (by_name["orin-nano"].dla.cores, by_name["orin-nx"].dla.cores, by_name["agx-orin"].dla.cores) == (0, 1, 2)
    assert by_name["agx-orin"].dla_supported("10.3.0") and by_name["agx-orin"].dla_supported("11.4.1")
    assert not by_name["agx-orin"].dla_supported("10.13.3") and not by_name["orin-nx"].dla_supported("11.4.1")
    assert not any(t.dla.enabled for t in by_name.values())  # DLA is opt-in everywhere
    # with --dla the Orin modules put only the stage engines without gather/scatter/top-k on the DLA
    assert by_name["orin-nx"].dla.stages == by_name["agx-orin"].dla.stages == "pre-pruning"
    assert all(t.dla.stages == "all" for t in by_name.values() if t.dla.cores == 0)  # the default, unused
    thor = by_name["thor"]
    assert (thor.compute_capabilities, thor.dla.cores, thor.versions) == ((110,), 0, ("10.13", "11.4"))
    assert all(c.split(".")[0] == "13" for s in thor.stacks for c in s.cuda)
    h100 = by_name["h100"]
    assert (h100.backend, h100.compute_capabilities, h100.jetson) == ("tensorrt", (90,), False)
    rtx = by_name["desktop-rtx"]
    assert rtx.backend == "tensorrt-rtx" and rtx.compute_capabilities == (80, 86, 89, 120, 121)
    assert rtx.cuda_archs_cmake == "80;86;89;120;121"
    assert by_name["orin-nano"].precision_spec == "fp16,int8,int8,fp16"
    assert all(t.precision_spec == "fp16" for n, t in by_name.items() if n != "orin-nano")
    assert all(0 <= t.builder_optimization_level <= 5 and t.workspace_bytes >= 1 << 30 for t in by_name.values())


def test_rtx_compute_capabilities_match_the_installed_tensorrt_rtx():
    trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT for RTX is not installed (make setup on x86-64)")
    sms = tuple(sorted(int(n[2:]) for n in trt.ComputeCapability.__members__ if n.startswith("SM")))
    assert sms == targets.RTX_COMPUTE_CAPABILITIES


def test_version_checks():
    nano = targets.load_target("orin-nano")
    assert nano.check_version("10.3.0.30") is None and nano.check_version("11.4.1.2") is None
    msg = nano.check_version("10.2.0")
    assert msg and "needs TensorRT >= 10.3" in msg and "10.2.0" in msg
    msg = nano.check_version("10.7.0")
    assert msg and "10.3, 10.13, 11.4" in msg and "[[stack]]" in msg
    assert targets.load_target("h100").check_version("11.1.0.5") is None  # "11" covers every 11.x
    assert targets.version_matches("10.13.3", "10.13") and not targets.version_matches("10.13.3", "10.1")
    assert targets.version_tuple("11.0.0rc1") == (11, 0, 0)


def test_unknown_target_lists_the_known_ones_on_one_line():
    with pytest.raises(ConfigError) as e:
        targets.load_target("orin")
    msg = str(e.value)
    assert "\n" not in msg and "unknown target 'orin'" in msg
    assert all(n in msg for n in SHIPPED) and "did you mean" in msg


def _profile(tmp_path: Path, profile: str = "agx-orin", **edits: str | None) -> Path:
    """A copy of a shipped profile with `key = value` lines replaced (None deletes the line) or added (at the
    top; a key that does not exist yet but belongs to [dla] is given as dla_KEY)."""
    d = tmp_path / "targets"
    d.mkdir(exist_ok=True)
    lines = (REPO / "targets" / f"{profile}.toml").read_text().splitlines()
    out = []
    for line in lines:
        key = line.split("=")[0].strip()
        if key in edits:
            value = edits.pop(key)
            if value is not None:
                out.append(f"{key} = {value}")
            continue
        out.append(line)
        if line == "[dla]":
            out += [f"{k[4:]} = {edits.pop(k)}" for k in [k for k in edits if k.startswith("dla_")]]
    head = [f"{k} = {v}" for k, v in edits.items() if v is not None]
    (d / f"{profile}.toml").write_text("\n".join(head + out) + "\n")
    return d


@pytest.mark.parametrize(
    "edits, field, words",
    [
        ({"flavour": '"x"'}, "flavour", "unknown field"),
        ({"workspce_mib": "1"}, "workspce_mib", "did you mean 'workspace_mib'"),
        ({"backend": '"onnxruntime"'}, "backend", "tensorrt, tensorrt-rtx"),
        ({"name": '"agx"'}, "name", "differs from the file name"),
        ({"workspace_mib": '"4 GiB"'}, "workspace_mib", "expected an integer"),
        ({"workspace_mib": None}, "workspace_mib", "missing"),
        ({"builder_optimization_level": "7"}, "builder_optimization_level", "outside 0..5"),
        ({"precision": '"bf16"'}, "precision", "not one of fp32, fp16, int8"),
        ({"cuda_archs": "[86]"}, "cuda_archs", "no entry for SM 87"),
        ({"cuda_archs": '["sm87"]'}, "cuda_archs", "CMAKE_CUDA_ARCHITECTURES"),
        ({"compute_capabilities": "[]"}, "compute_capabilities", "non-empty list"),
        ({"min_version": '"ten"'}, "min_version", "not a version"),
        ({"min_version": '"10.13"'}, "stack[0].version", "below min_version"),
        ({"cores": "0", "enabled": "true"}, "dla.enabled", "no DLA"),
        ({"core": "2"}, "dla.core", "0..1"),
        ({"dla_gpu_fallback": "false", "enabled": "true"}, "dla.gpu_fallback", "must be true"),
        ({"versions": '["10.7"]'}, "dla.versions", "not a [[stack]] version"),
        ({"stages": '"pruned"'}, "dla.stages", "not one of 'all', 'pre-pruning'"),
        ({"cuda": "12.6"}, "stack[0].cuda", "a CUDA version"),
    ],
)
def test_bad_fields_name_the_file_and_the_field(tmp_path, edits, field, words):
    d = _profile(tmp_path, **edits)
    with pytest.raises(ConfigError) as e:
        targets.load_target("agx-orin", d)
    msg = str(e.value)
    assert "\n" not in msg, msg
    assert f"{d / 'agx-orin.toml'}: field '{field}'" in msg and words in msg, msg


def test_rtx_profile_rules(tmp_path):
    d = _profile(tmp_path, "desktop-rtx", compute_capabilities="[80, 87]", cuda_archs="[80, 87]")
    with pytest.raises(ConfigError, match="TensorRT-RTX cannot build for SM 87"):
        targets.load_target("desktop-rtx", d)
    d = _profile(tmp_path, "desktop-rtx", cores="1", enabled="true")
    with pytest.raises(ConfigError, match="TensorRT-RTX ignores DLA"):
        targets.load_target("desktop-rtx", d)


def test_broken_toml_and_missing_directory(tmp_path):
    d = tmp_path / "targets"
    d.mkdir()
    (d / "bad.toml").write_text('name = "bad"\nbackend = \n')
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML .*: fix the file"):
        targets.load_target("bad", d)
    with pytest.raises(ConfigError, match="DVIT_TARGETS_DIR"):
        targets.list_targets(tmp_path / "nowhere")


def test_env_var_points_at_another_profile_folder(tmp_path, monkeypatch):
    d = _profile(tmp_path, "thor")
    monkeypatch.setenv(targets.ENV_DIR, str(d))
    assert targets.list_targets() == ["thor"]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.targets", *args], check=False, cwd=REPO, capture_output=True,
                          text=True, env=env, timeout=60)


def test_cuda_archs_cli_for_the_makefile():
    assert _run("--cuda-archs", "orin-nano").stdout == "87\n"
    assert _run("--cuda-archs", "desktop-rtx").stdout == "80;86;89;120;121\n"
    r = _run("--cuda-archs", "xavier")
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "unknown target 'xavier'" in r.stderr


def test_driver_cuda_is_the_oldest_listed_jetpacks():
    """What the plugin's CUDA runtime must not outgrow: a Jetson's JetPack driver (by default the oldest JetPack its
    profile lists, so that the plugin loads on all of them); nothing for a GPU whose driver the profile cannot know."""
    by_name = {t.name: t for t in targets.load_all()}
    for name in ("orin-nano", "orin-nx", "agx-orin"):
        t = by_name[name]
        assert t.driver_cuda() == ("6", "12.6") and t.driver_cuda("6.2") == ("6.2", "12.6")
        assert t.driver_cuda("7") == ("7", "13") and t.driver_cuda("7.2.2") == ("7.2.2", "13")
    assert by_name["thor"].driver_cuda() == ("7", "13.0")
    assert by_name["h100"].driver_cuda() is None and by_name["desktop-rtx"].driver_cuda() is None
    with pytest.raises(ConfigError, match=r"lists no JetPack 5: .* lists JetPack 6.1, 6.2, 7, 7.2.2"):
        by_name["orin-nano"].driver_cuda("5")
    with pytest.raises(ConfigError, match="not a Jetson"):
        by_name["h100"].driver_cuda("6")


def test_cmake_args_cli_for_the_makefile():
    """`make plugins TARGET=...` hands these to plugins/CMakeLists.txt: every option always (a reused build directory
    forgets the previous target), space-separated, none with a space or a quote."""
    expected = {
        ("orin-nano",): "-DCMAKE_CUDA_ARCHITECTURES=87 -DDVIT_PROFILE=orin-nano -DDVIT_DEVICE_CUDA=12.6 "
                        "-DDVIT_DEVICE_JETPACK=6",
        ("orin-nano", "--jetpack", "7"): "-DCMAKE_CUDA_ARCHITECTURES=87 -DDVIT_PROFILE=orin-nano "
                                         "-DDVIT_DEVICE_CUDA=13 -DDVIT_DEVICE_JETPACK=7",
        ("thor",): "-DCMAKE_CUDA_ARCHITECTURES=110 -DDVIT_PROFILE=thor -DDVIT_DEVICE_CUDA=13.0 -DDVIT_DEVICE_JETPACK=7",
        ("desktop-rtx",): "-DCMAKE_CUDA_ARCHITECTURES=80;86;89;120;121 -DDVIT_PROFILE=desktop-rtx "
                          "-DDVIT_DEVICE_CUDA= -DDVIT_DEVICE_JETPACK=",
        ("h100",): "-DCMAKE_CUDA_ARCHITECTURES=90 -DDVIT_PROFILE=h100 -DDVIT_DEVICE_CUDA= -DDVIT_DEVICE_JETPACK=",
    }
    for (name, *extra), line in expected.items():
        r = _run("--cmake-args", name, *extra)
        assert (r.returncode, r.stdout, r.stderr) == (0, line + "\n", ""), r.stderr
    for args, words in ((("--cmake-args", "orin-nano", "--jetpack", "5"), "lists no JetPack 5"),
                        (("--cmake-args", "h100", "--jetpack", "6"), "h100 is not a Jetson"),
                        (("--jetpack", "6"), "--jetpack goes with --cmake-args"),
                        (("--cmake-args", "xavier"), "unknown target 'xavier'")):
        r = _run(*args)
        assert r.returncode == 2 and r.stdout == "", r.stdout
        assert len(r.stderr.strip().splitlines()) == 1 and words in r.stderr, r.stderr


def test_configure_and_main_print_a_table_json_and_one_profile(capsys):
    parser = argparse.ArgumentParser()
    targets.configure(parser)
    assert targets.main(parser.parse_args([])) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["target", "backend", "versions"]
    assert all(any(line.startswith(n + " ") for line in table.splitlines()) for n in SHIPPED)
    assert targets.main(parser.parse_args(["--json"])) == 0
    data = json.loads(capsys.readouterr().out)
    assert {d["name"] for d in data} == SHIPPED
    assert targets.main(parser.parse_args(["thor"])) == 0
    out = capsys.readouterr().out
    assert "sm_110" in out and "JetPack 7.0 / 7.1" in out and "DLA: none" in out
    assert targets.main(parser.parse_args(["agx-orin"])) == 0
    assert "DLA: 2 core(s) (with 10.3, 11.4); off (opt-in); engines on it: pre-pruning (dla.stages)" in (
        capsys.readouterr().out)


def test_modules_import_without_torch_or_tensorrt():
    """A Jetson has numpy and JetPack's TensorRT only: these modules must import with torch, timm, modelopt
    and onnx unavailable, import no TensorRT until asked, and pull in no pipeline stage module."""
    code = (
        "import sys\n"
        "for m in ('torch', 'timm', 'modelopt', 'onnx', 'onnxruntime'):\n"
        "    sys.modules[m] = None\n"
        "import pipeline.targets, pipeline.backend.tensorrt.loader, pipeline.backend.tensorrt.plan_header\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorrt', 'tensorrt_rtx') or m in (\n"
        "    'pipeline.export', 'pipeline.precision', 'pipeline.validate', 'pipeline.plugin_pass',\n"
        "    'pipeline.train', 'pipeline.evaluate')]\n"
        "assert not bad, bad\n"
        "print(len(pipeline.targets.load_all()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != targets.ENV_DIR}
    r = subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO, capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(len(SHIPPED))


def test_a_copied_profile_for_turing_is_valid(tmp_path):
    """The README's recipe for a Turing-only RTX engine passes validation."""
    d = tmp_path / "targets"
    d.mkdir()
    text = (REPO / "targets" / "desktop-rtx.toml").read_text()
    text = text.replace('name = "desktop-rtx"', 'name = "rtx-turing"')
    text = text.replace("compute_capabilities = [80, 86, 89, 120, 121]", "compute_capabilities = [75]")
    text = text.replace("cuda_archs = [80, 86, 89, 120, 121]", "cuda_archs = [75]")
    (d / "rtx-turing.toml").write_text(text)
    shutil.copy(REPO / "targets" / "thor.toml", d)
    assert targets.load_target("rtx-turing", d).compute_capabilities == (75,)
