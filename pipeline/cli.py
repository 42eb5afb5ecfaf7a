"""`dvit`: one subcommand per pipeline stage, each a thin front on its module's API.

Every stage module exposes `configure(parser)` and `main(args) -> int`; a module is imported only for the
command being run (or its --help), never for `dvit --help`, so `dvit scan` never pays for importing torch and a
device without torch lists every command.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# (command, module, one-line help). Order is the pipeline's order.
COMMANDS: list[tuple[str, str, str]] = [
    ("train", "pipeline.train", "train a dense teacher or distil a DynamicViT student from it"),
    ("evaluate", "pipeline.evaluate", "top-1/top-5, FLOPs, parameters and throughput of checkpoints"),
    ("export", "pipeline.export", "static-ratio ONNX stage graphs split at the pruning points, plus a fused graph"),
    ("scan", "pipeline.opscan", "check any ONNX file against TensorRT's ONNX parser operator support"),
    ("targets", "pipeline.targets", "device target profiles: backend and versions, SMs, DLA, build defaults"),
    ("precision", "pipeline.precision", "write FP16 (ModelOpt AutoCast) and INT8 (explicit Q/DQ) into the graphs"),
    ("plugin-pass", "pipeline.plugin_pass", "replace TopK+Gather pruning patterns with the DvitTopKGather plugin"),
    ("build", "pipeline.build", "TensorRT engines per stage and fused, with the plugin, for a target profile"),
    ("inspect", "pipeline.inspect_engine", "what an engine is and whether this device's TensorRT can load it"),
    ("reference", "pipeline.reference", "record PyTorch's outputs on a dataset slice, to validate where torch is absent"),
    ("validate", "pipeline.validate", "any graph set against PyTorch, a recorded reference or another graph set"),
    ("latency", "pipeline.latency", "time pruned vs dense, stage chain vs fused, in ONNX Runtime or TensorRT"),
    ("report", "pipeline.report", "one self-contained page (HTML, plus Markdown and JSON) of validation, latency and engines"),
    ("deploy", "pipeline.deploy", "ship a graph set to a device over ssh; build, validate and time it there; bring the results back"),
]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dvit",
        description="dvit-edge: compile DynamicViT token-pruning transformers for TensorRT on Jetson and GPUs. "
        "Each stage reads the previous stage's artifacts and manifest.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module, help_text in COMMANDS:
        if name != only:
            sub.add_parser(name, help=help_text, add_help=False)
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod = importlib.import_module(module)
        mod.configure(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .errors import DvitError

    argv = sys.argv[1:] if argv is None else argv
    known = {name for name, _, _ in COMMANDS}
    only = next((a for a in argv if a in known), None)
    args = build_parser(only).parse_args(argv)
    args._argv = list(argv)  # for commands that re-launch themselves (dvit train under torchrun)
    try:
        return int(importlib.import_module(args._module).main(args) or 0)
    except DvitError as e:
        print(f"dvit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dvit {args.command}: interrupted; no partial artifact was left behind", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
