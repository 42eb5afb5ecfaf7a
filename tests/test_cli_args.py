"""pipeline/cli_args.py: the options several commands share, each with one flag, metavar, dest and help."""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import cli, cli_args

REPO = Path(__file__).resolve().parents[1]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dvit x", exit_on_error=False)
    cli_args.add_graphs(p)
    cli_args.add_target(p, required=False)
    cli_args.add_batch_sizes(p)
    cli_args.add_backend(p, ("onnxruntime", "tensorrt"))
    cli_args.add_plugin_lib(p, default_text="build/plugins/libdvit_trt_plugins.so")
    cli_args.add_threads(p)
    cli_args.add_progress(p)
    return p


def test_defaults_and_values() -> None:
    args = parser().parse_args(["--graphs", "g"])
    assert vars(args) == {"graphs": "g", "target": None, "batch_sizes": None, "backend": "onnxruntime",
                          "plugin_lib": None, "threads": None, "no_progress": False}
    args = parser().parse_args(["--graphs", "g", "--target", "orin-nano", "--batch-sizes", "1,8", "--backend",
                                "tensorrt", "--plugin-lib", "/x/lib.so", "--threads", "2", "--no-progress"])
    assert vars(args) == {"graphs": "g", "target": "orin-nano", "batch_sizes": "1,8", "backend": "tensorrt",
                          "plugin_lib": "/x/lib.so", "threads": 2, "no_progress": True}


def test_graphs_once_or_repeated() -> None:
    with pytest.raises(SystemExit):  # required by default
        parser().parse_args([])
    p = argparse.ArgumentParser()
    cli_args.add_graphs(p, multiple=True)
    assert p.parse_args(["--graphs", "a", "--graphs", "b"]).graphs == ["a", "b"]
    assert "repeat --graphs for several" in p.format_help()
    optional = argparse.ArgumentParser()
    cli_args.add_graphs(optional, required=False, help="the graph set to record")
    assert optional.parse_args([]).graphs is None
    assert "the graph set to record" in optional.format_help()


def test_backend_choices_and_default() -> None:
    p = argparse.ArgumentParser(exit_on_error=False)
    action = cli_args.add_backend(p, ["onnxruntime", "tensorrt"], default="tensorrt")
    assert action.default == "tensorrt" and p.parse_args(["--backend", "onnxruntime"]).backend == "onnxruntime"
    with pytest.raises(argparse.ArgumentError):
        p.parse_args(["--backend", "openvino"])
    assert "the runtime: onnxruntime, tensorrt (default tensorrt)" in " ".join(p.format_help().split())
    with pytest.raises(ValueError, match="not one of"):
        cli_args.add_backend(argparse.ArgumentParser(), ["onnxruntime"], default="tensorrt")
    with pytest.raises(ValueError, match="at least one"):
        cli_args.add_backend(argparse.ArgumentParser(), [])


def test_help_lists_each_option_once_with_its_metavar() -> None:
    raw = parser().format_help()
    listed = re.findall(r"^  (--[a-z-]+(?: \S+)?)", raw.split("\noptions:\n", 1)[1], re.MULTILINE)
    assert listed == ["--graphs DIR", "--target NAME", "--batch-sizes B,..", "--backend {onnxruntime,tensorrt}",
                      "--plugin-lib PATH", "--threads N", "--no-progress"]
    text = " ".join(raw.split())
    assert ("--plugin-lib PATH the DvitTopKGather plugin library, needed when the graphs hold plugin nodes "
            "(default: build/plugins/libdvit_trt_plugins.so)") in text
    assert "--no-progress no progress bar" in text
    assert "--plugin-library" not in text


def test_in_an_argument_group_and_with_a_command_of_its_own_help() -> None:
    p = argparse.ArgumentParser()
    group = p.add_argument_group("runtime")
    cli_args.add_threads(group, help="ONNX Runtime's intra-op threads")
    cli_args.add_progress(group, help="print only the result")
    text = p.format_help()
    assert "runtime:" in text and "ONNX Runtime's intra-op threads" in text and "print only the result" in text
    assert p.parse_args(["--threads", "3"]).threads == 3


def test_deploy_takes_the_shared_options() -> None:
    p = cli.build_parser("deploy")
    args = p.parse_args(["deploy", "--graphs", "g", "--target", "t", "--host", "h", "--no-progress"])
    assert (args.graphs, args.target, args.no_progress) == ("g", "t", True)


def test_imports_only_the_standard_library() -> None:
    code = ("import sys; before = set(sys.modules); import pipeline.cli_args; "
            "new = sorted(m for m in set(sys.modules) - before if not m.startswith('pipeline')); "
            "heavy = [m for m in new if m.split('.')[0] in ('numpy', 'torch', 'onnx', 'onnxruntime', 'tensorrt')]; "
            "print(heavy)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"
