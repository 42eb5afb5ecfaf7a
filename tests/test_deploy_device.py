"""dvit deploy to a device that has exactly what README.md says a device needs, and nothing of the workstation's.

The "device" is this machine behind a real OpenSSH server on loopback (tests/sshd_fixture.py), whose sessions see
a `python3` that is a plain base interpreter (no torch, timm or ModelOpt) with TensorRT in its system packages:
TensorRT-RTX, the pinned `tensorrt-rtx` extra, standing in for JetPack's TensorRT (tests/device_env.py). The
deploys here let dvit deploy make its own venv there (no --remote-python: `python3 -m venv --system-site-packages`
and `pip install .[device,...]` with what this device needs: no GPU, so ONNX Runtime validates the ONNX graphs),
and ship an export graph set and a plugin graph set (the DvitTopKGather plugin built on the device with its nvcc).
One deploy uses a venv made exactly as README.md tells (`pip install ".[device,onnxruntime]"`) as --remote-python;
one uses a venv with `.[device]` only, which preflight must stop, naming what is missing.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from device_env import device_session_env, device_venv, has_module
from sshd_fixture import APT_LINE, SshdUnavailable, start_sshd
from test_deploy import HAVE_HEADERS, HEADERS
from test_precision import make_tiny_export

from pipeline import cli
from pipeline.deploy import DeployOptions, deploy
from pipeline.errors import DvitError
from pipeline.graphset import GraphSet

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory):
    env_root = tmp_path_factory.getbasetemp() / "device-env"
    try:
        server = start_sshd(tmp_path_factory.mktemp("sshd-device"), env=device_session_env(env_root))
    except SshdUnavailable as e:
        pytest.skip(f"no OpenSSH server for the deploy tests: {e} (Debian: `{APT_LINE}`)")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from pipeline.reference import record

    root = tmp_path_factory.mktemp("device-sets")
    export, _ = make_tiny_export(root)
    record(root / "ref.npz", graphs=str(export), limit=16, threads=1, progress=False)
    plugin = root / "plugin"
    assert cli.main(["plugin-pass", "--graphs", str(export), "--out", str(plugin), "--no-progress"]) == 0
    source = root / "source"  # what is shipped: a snapshot of the checkout
    shutil.copytree(REPO / "pipeline", source / "pipeline", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(REPO / "plugins", source / "plugins", ignore=shutil.ignore_patterns("build*", "__pycache__"))
    shutil.copytree(REPO / "targets", source / "targets")
    for name in ("pyproject.toml", "README.md"):
        (source / name).write_bytes((REPO / name).read_bytes())
    return {"export": export, "plugin": plugin, "ref": root / "ref.npz", "source": source,
            "env": tmp_path_factory.getbasetemp() / "device-env"}


def options(server, sets: dict, root: Path, **extra: object) -> DeployOptions:
    kw: dict = {
        "graphs": sets["export"], "target": "desktop-rtx", "host": server.host, "port": server.port,
        "identity": str(server.identity), "known_hosts": str(server.known_hosts), "reference": sets["ref"],
        "remote_dir": str(root / "dvit-deploy"), "out": root / "results",
        "tensorrt_root": str(HEADERS) if HAVE_HEADERS else None, "cuda_archs": "86", "jobs": 2,
        "source": sets["source"], "progress": False}
    kw.update(extra)
    return DeployOptions(**kw)


def _status(r) -> dict:
    return {s.name: s for s in r.steps}


def _log(r, step: str) -> str:
    out = r.results_dir / "out" / "logs"
    return "".join(p.read_text() for p in sorted(out.glob(f"*-{step}.*")))


@pytest.fixture(scope="module")
def managed(device, sets: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The deploy's own venv: an export set, then a plugin set (built), then the plugin set with --only-validate
    and --keep-releases 1, twice."""
    root = tmp_path_factory.mktemp("managed")
    opts = options(device, sets, root)
    runs: dict = {"root": root, "options": opts, "device": root / "dvit-deploy", "env_root": sets["env"]}
    runs["export"] = deploy(opts)
    runs["plugin"] = deploy(dataclasses.replace(opts, graphs=sets["plugin"]))
    runs["validate1"] = deploy(dataclasses.replace(opts, graphs=sets["plugin"], only_validate=True, keep_releases=1))
    runs["validate2"] = deploy(dataclasses.replace(opts, graphs=sets["plugin"], only_validate=True, keep_releases=1))
    return runs


def test_the_managed_venv_has_what_this_device_needs_and_nothing_else(managed: dict) -> None:
    first = managed["export"]
    env = _status(first)["env"]
    assert env.status == "ok", env
    assert '"$HOME' not in (env.command or "") and "[device,onnxruntime]" in (env.command or "")
    assert "README" not in _log(first, "env")  # the bundle has the readme pyproject.toml names: no warning
    venv = managed["device"] / "venv" / "bin" / "python"
    session = device_session_env(managed["env_root"])  # as a device session runs it: TensorRT from the system
    for module in ("onnx", "onnxruntime", "onnxruntime_extensions", "tensorrt_rtx", "numpy"):
        assert has_module(venv, module, session), module
    for module in ("torch", "timm", "modelopt"):
        assert not has_module(venv, module, session), module
    # the later deploys find it up to date
    assert "device dependencies up to date: .[device,onnxruntime]" in _log(managed["plugin"], "env")


@pytest.mark.parametrize("which", ["export", "plugin"])
def test_an_export_set_and_a_plugin_set_deploy_and_validate(managed: dict, sets: dict, which: str) -> None:
    r = managed[which]
    status = _status(r)
    assert r.status == "ok" and r.validation and r.validation["passed"], (r.validation, status)
    assert status["validate"].status == "ok" and status["build"].status == "ok"
    if HAVE_HEADERS:
        assert status["plugin"].status == "ok"
    assert status["latency"].status == "skipped" and "no GPU" in (status["latency"].reason or "")
    assert "was validated with ONNX Runtime" in r.engines["why"]
    v = json.loads((r.results_dir / "out" / "validation.json").read_text())
    assert v["graphs_dir"].endswith("/graphs") and GraphSet.load(sets[which]).uses_plugin == (which == "plugin")


def test_only_validate_with_keep_releases_1_keeps_the_plugin_library_its_engines_name(managed: dict) -> None:
    """Issue 16.5: the engines were built in the plugin deploy's release; two --only-validate deploys with
    --keep-releases 1 hard-link them into new releases and prune that one. The engines' manifest still leads to
    a plugin library that exists (what validating them on a GPU loads: plugins.for_graph_set, then describe)."""
    from pipeline.backend.tensorrt import plugins

    device = managed["device"]
    for key in ("validate1", "validate2"):
        r = managed[key]
        assert r.status == "ok" and _status(r)["validate"].status == "ok" and _status(r)["reuse-engines"].status == "ok"
    releases = sorted(p.name for p in (device / "releases").iterdir())
    assert releases == [managed["validate2"].release] and managed["plugin"].release not in releases
    engines = GraphSet.load(device / "current" / "out" / "engines", ("engine",))
    assert engines.uses_plugin and engines.manifest["plugin_library"]
    lib = plugins.for_graph_set(engines)
    assert lib is not None
    described = plugins.describe(lib)  # raises "plugin library ... not found" where the path went stale
    assert described.path.is_relative_to((device / "releases" / managed["validate2"].release).resolve())


def test_a_venv_made_as_the_readme_says_deploys_a_plugin_set(device, sets: dict, managed: dict) -> None:
    """--remote-python: a venv made exactly as README.md says for a device without a GPU."""
    python = device_venv(sets["env"])
    r = deploy(options(device, sets, managed["root"], graphs=sets["plugin"], remote_python=str(python)))
    status = _status(r)
    assert r.status == "ok" and r.validation["passed"] and status["env"].status == "skipped"
    assert status["build"].status == "ok" and status["validate"].status == "ok"


def test_a_device_without_onnx_runtime_is_stopped_in_preflight(device, sets: dict, tmp_path: Path) -> None:
    """Issue 16.1: a venv with `.[device]` only (and TensorRT), given as --remote-python: no GPU here, so the
    deploy would validate the ONNX graphs with ONNX Runtime, which that venv lacks. Preflight names each missing
    package and the fix; nothing is shipped."""
    bare = device_venv(sets["env"], extras="device")
    assert not has_module(bare, "onnxruntime") and has_module(bare, "tensorrt_rtx")
    opts = options(device, sets, tmp_path, graphs=sets["plugin"], remote_python=str(bare))
    with pytest.raises(DvitError, match=rf"^{bare} on 127\.0\.0\.1 lacks onnx, onnxruntime, onnxruntime-extensions "
                                        r"\(onnx: no GPU: the shipped ONNX graphs are validated with ONNX Runtime; "
                                        r".*onnxruntime-extensions: the plugin graphs' DvitTopKGather runs in ONNX "
                                        r"Runtime through it\): install them there \(`.* -m pip install "
                                        r"\"\.\[device,onnxruntime\]\"` from a dvit-edge checkout\), or leave out "
                                        r"--remote-python"):
        deploy(opts)
    assert not (tmp_path / "dvit-deploy" / "releases").exists() and not (tmp_path / "results").exists()


def test_a_spatial_set_deploys_with_the_readme_venv_and_validates(device, sets: dict, managed: dict,
                                                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    """Issue 18: a DynamicCNN export (feature-map boundaries, absolute kept positions, native TopK/GatherElements/
    ScatterElements) deploys to a device set up as README.md says, whose engines build there and whose graphs
    validate against the workstation's recording, with nothing on the device that knows ConvNeXt but the graph set."""
    from test_model_zoo_spatial import SpatialRun

    run = SpatialRun("convnext", tmp_path_factory.mktemp("spatial-deploy"))
    graphs, ref = run.export(), run.reference()
    r = deploy(options(device, sets, managed["root"] / "spatial", graphs=graphs, reference=ref,
                       remote_python=str(device_venv(sets["env"]))))
    status = _status(r)
    assert r.status == "ok" and r.validation and r.validation["passed"], (r.validation, status)
    assert status["build"].status == "ok" and status["validate"].status == "ok"
    v = json.loads((r.results_dir / "out" / "validation.json").read_text())
    assert v["model"]["config"]["family"] == "convnext"
    assert [k["identical"] for k in v["chain"]["kept"]] == [1.0, 1.0, 1.0]
