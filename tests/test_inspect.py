"""`dvit inspect ENGINE`: the plan header and the engine manifest of a real TensorRT-RTX engine, read without loading
it; a plan from another release is named with "rebuild:" and exit status 1; anything else is one line.

Skips, saying why, only where tensorrt_rtx is not importable (it builds the engine inspected).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

rtx = pytest.importorskip("tensorrt_rtx", reason="TensorRT for RTX (pip extra tensorrt-rtx) is not installed")

from test_precision import make_tiny_export

from pipeline.build import build_engines
from pipeline.cli import main as dvit
from pipeline.inspect_engine import inspect

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("inspect")
    export, _ = make_tiny_export(root, batch_sizes=(1,))
    return build_engines(export, "desktop-rtx", root / "engines", cache_dir=None, progress=False,
                         plugin_search=()).out


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = dvit(["inspect", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_inspect_says_what_built_the_engine_and_what_its_manifest_says(engines: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, str(engines / "b1" / "stage1.plan"))
    assert rc == 0 and err == "", err
    first, *rest = out.splitlines()
    assert first.startswith(f"{engines / 'b1' / 'stage1.plan'}: plan built by TensorRT-RTX {rtx.__version__} "
                            "(for sm_80, sm_86, sm_89, sm_120, sm_121;")
    text = "\n".join(rest)
    assert f"built for target desktop-rtx with TensorRT-RTX {rtx.__version__}" in text
    assert "graph: stage 1 (keeps 34 tokens) at batch 1, precision fp32" in text
    assert "source graph: b1/stage1.onnx" in text and "of the export graph set" in text
    assert "tensors: tokens_1 float32 [1, 50, 32] -> tokens_2 float32 [1, 35, 32], kept_indices_1 int64 [1, 34]" in text
    assert "layers: " in text and "Q/DQ 0, plugin 0, HALF tensors 0" in text and "report b1/stage1.layers.json" in text
    assert f"this machine: TensorRT-RTX {rtx.__version__}: the plan's backend and version match" in text

    rc, out, _ = run(capsys, str(engines / "b1" / "fused.plan"), "--json")
    got = json.loads(out)
    assert rc == 0 and got["header"]["backend"] == "tensorrt-rtx" and got["header"]["version"] == rtx.__version__
    assert got["entry"]["name"] == "fused" and got["target"]["name"] == "desktop-rtx" and got["problem"] is None
    assert got["installed"] == {"tensorrt-rtx": rtx.__version__}


def test_a_plan_from_another_release_is_named_before_a_load_fails(engines: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The version bytes (24..27) of a copy altered to 1.6: "rebuild:", exit 1; the manifest still describes it."""
    copy = tmp_path / "b1" / "stage2.plan"
    copy.parent.mkdir()
    shutil.copyfile(engines / "b1" / "stage2.plan", copy)
    data = bytearray(copy.read_bytes())
    major, minor = data[24], data[25]
    data[25] = minor - 1 if minor else minor + 1
    copy.write_bytes(bytes(data))
    rc, out, err = run(capsys, str(copy), "--manifest", str(engines))
    older = f"{major}.{data[25]}.{data[26]}"
    assert rc == 1
    assert f"plan built by TensorRT-RTX {older}.{data[27]}" in out
    assert err.strip() == (f"dvit inspect: warning: rebuild: stage2.plan was built by TensorRT-RTX {older}, this "
                           f"device runs {rtx.__version__}")
    assert "graph: stage 2 (keeps 24 tokens) at batch 1" in out  # matched by its b1/stage2.plan tail
    assert "differs from the engine the manifest lists as b1/stage2.plan" in out
    # without --manifest, nothing beside it: said, not an error
    lone = tmp_path / "lone.plan"
    shutil.copyfile(copy, lone)
    rc, out, _ = run(capsys, str(lone))
    assert rc == 1 and "no engine manifest found" in out and "pass --manifest DIR" in out


def test_what_is_not_a_plan_is_one_line(engines: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for path, words in ((engines / "manifest.json", "is not a TensorRT plan (it starts with '{\\n  '"),
                        (engines / "b1" / "stage0.layers.json", "is not a TensorRT plan"),
                        (tmp_path / "short.plan", "too short for a TensorRT plan"),
                        (tmp_path / "missing.plan", "cannot read")):
        if path.name == "short.plan":
            path.write_bytes(b"vtrt")
        rc, out, err = run(capsys, str(path))
        assert rc == 2 and out == "" and err.count("\n") == 1 and words in err, err
        assert err.startswith("dvit inspect: error: ")
    rc, _, err = run(capsys, str(engines / "b1" / "stage0.plan"), "--manifest", str(tmp_path))
    assert rc == 2 and "no manifest.json in" in err and err.count("\n") == 1


def test_without_tensorrt_the_header_is_still_read(engines: Path) -> None:
    """A machine without any TensorRT (the import blocked in a fresh interpreter) inspects the header and says
    that loading was not checked."""
    code = ("import importlib.abc, sys\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('tensorrt', 'tensorrt_rtx', 'torch', 'onnx'):\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from pipeline.cli import main\n"
            "sys.exit(main(['inspect', *sys.argv[1:]]))\n")
    r = subprocess.run([sys.executable, "-c", code, str(engines / "b1" / "stage0.plan")], cwd=REPO,
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert "plan built by TensorRT-RTX" in r.stdout and "this machine: no TensorRT" in r.stdout
    assert "whether the plan loads was not checked" in r.stdout


def test_inspect_api(engines: Path) -> None:
    r = inspect(engines / "b1" / "stage3.plan")
    assert r.entry is not None and r.entry.index == 3 and r.engines is not None and r.engines.kind == "engine"
    assert not r.must_rebuild and r.header.fields["header_format"] == 2
