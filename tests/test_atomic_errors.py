"""Unwritable output paths end in one line naming the path and the cause, never a traceback: every atomic writer
(pipeline.io) turns an OSError into a DvitError, and the CLI prints it with exit status 2. The batch-size message
of a graph set names the flag of the command that asked."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_models import TINY

from pipeline import cli
from pipeline.checkpoint import save_checkpoint
from pipeline.errors import ConfigError, DvitError
from pipeline.graphset import GraphSet
from pipeline.io import atomic_dir, atomic_write, atomic_write_json
from pipeline.model import DynamicViT

ROOT = Path(__file__).resolve().parents[1]
# /proc refuses new entries (ENOENT), for root too; a path below a regular file is ENOTDIR.
PROC_OUT = Path("/proc/dvit-no-such-dir")


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("atomic") / "student.pt"
    save_checkpoint(path, DynamicViT(TINY).eval())
    return path


def _one_line(e: BaseException, path: Path) -> str:
    msg = str(e)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


@pytest.mark.parametrize("target", ["proc", "below a file"])
def test_atomic_writers_name_the_path_and_the_cause(target: str, tmp_path: Path) -> None:
    if target == "proc":
        base, cause = PROC_OUT, os.strerror(errno.ENOENT)
    else:
        (tmp_path / "a_file").write_text("x")
        base, cause = tmp_path / "a_file" / "sub", os.strerror(errno.ENOTDIR)
    for write in (
        lambda p: atomic_write_json(p / "x.json", {"a": 1}),
        lambda p: atomic_write(p / "x.bin", lambda t: t.write_bytes(b"x")),
        lambda p: atomic_dir(p / "set").__enter__(),
        lambda p: atomic_dir(p).__enter__(),
        lambda p: atomic_write_json(p, {"a": 1}),
    ):
        with pytest.raises(DvitError) as info:
            write(base)
        assert cause in _one_line(info.value, base)
    assert sorted(p.name for p in tmp_path.iterdir()) == (["a_file"] if target != "proc" else [])


def test_a_failing_write_inside_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    """An OSError while writing the temporary file or directory (a full disk, say) names the destination."""
    def full(p: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(DvitError) as info:
        atomic_write(tmp_path / "x.bin", full)
    assert os.strerror(errno.ENOSPC) in _one_line(info.value, tmp_path / "x.bin")
    with pytest.raises(DvitError) as info, atomic_dir(tmp_path / "set") as d:
        (d / "missing" / "f").write_text("x")  # a write into the directory being built
    assert _one_line(info.value, tmp_path / "set")
    assert list(tmp_path.iterdir()) == []
    # An OSError about some other file (an input that cannot be read) is not a write error: it stays what it is.
    with pytest.raises(FileNotFoundError), atomic_dir(tmp_path / "set"):
        (tmp_path / "no-such-input").read_bytes()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("out", [PROC_OUT, PROC_OUT / "y"])
def test_cli_export_to_an_unwritable_out_is_one_line(out: Path, student: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "export", "--checkpoint", str(student), "--batch-sizes", "1",
         "--verify-images", "1", "--out", str(out), "--no-progress"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    err = proc.stderr.strip()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and err.count("\n") == 0, err
    assert err.startswith("dvit export: error: cannot write ") and str(out) in err, err
    assert "--out" in err


def test_graph_set_batch_message_names_the_callers_flag(tmp_path: Path, student: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "export"
    assert cli.main(["export", "--checkpoint", str(student), "--batch-sizes", "1,2", "--verify-images", "2",
                     "--out", str(out), "--no-progress"]) == 0
    gs = GraphSet.load(out)
    with pytest.raises(ConfigError, match=r"pass --batch-size 2$"):
        gs.batch(3)
    with pytest.raises(ConfigError, match=r"pass --batch-sizes 1,2$"):
        gs.batch(3, flag="--batch-sizes")
    capsys.readouterr()
    rc = cli.main(["latency", "--graphs", str(out), "--batch-sizes", "3", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0, err
    assert "batch size 3" in err and "--batch-sizes 1,2" in err and "--batch-size " not in err, err
