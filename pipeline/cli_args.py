"""Options that several `dvit` commands take, defined once: the same flag, metavar, dest, default and help.

Each `add_*` adds one option to a parser (or an argument group) and returns its argparse Action. A command passes
`help=` only where the meaning differs for it (which graph sets it reads, what its default is); the flag, metavar
and dest never change, so `args.plugin_lib`, `args.batch_sizes`, ... are the same attribute in every command.

    --graphs DIR          add_graphs(p)                 (multiple=True: repeatable, a list)
    --target NAME         add_target(p)
    --batch-sizes B,..    add_batch_sizes(p)            the text as given; the command parses it
    --backend NAME        add_backend(p, choices)
    --plugin-lib PATH     add_plugin_lib(p)             dest plugin_lib
    --threads N           add_threads(p)
    --pool NAME           add_pool(p)                   ONNX Runtime's thread pools (backend.onnxruntime.pools)
    --no-progress         add_progress(p)               dest no_progress

Standard library only: a device without torch imports this with every command's parser.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

Parser = argparse.ArgumentParser | argparse._ArgumentGroup  # what add_argument is called on

GRAPHS_HELP = "a graph set: the output of 'dvit export', 'dvit precision' or 'dvit plugin-pass'"
GRAPHS_REPEAT = "; repeat --graphs for several"
TARGET_HELP = "device profile in targets/ (`dvit targets` lists them), e.g. desktop-rtx, orin-nano"
BATCH_SIZES_HELP = "batch sizes, comma-separated, e.g. 1,8 (default: every batch size of the graph set)"
BACKEND_HELP = "the runtime"
PLUGIN_LIB_HELP = "the DvitTopKGather plugin library, needed when the graphs hold plugin nodes"
THREADS_HELP = "CPU threads (default: the runtime's own choice)"
PROGRESS_HELP = "no progress bar"


def add_graphs(parser: Parser, *, multiple: bool = False, required: bool = True,
               help: str | None = None) -> argparse.Action:
    """--graphs DIR: one graph set (args.graphs: str), or with `multiple` one per --graphs (a list, in order)."""
    text = help if help is not None else GRAPHS_HELP + (GRAPHS_REPEAT if multiple else "")
    if multiple:
        return parser.add_argument("--graphs", action="append", required=required, default=None, metavar="DIR",
                                   help=text)
    return parser.add_argument("--graphs", required=required, default=None, metavar="DIR", help=text)


def add_target(parser: Parser, *, required: bool = True, help: str | None = None) -> argparse.Action:
    """--target NAME: a device profile (pipeline.targets.load_target reads it)."""
    return parser.add_argument("--target", required=required, default=None, metavar="NAME",
                               help=help if help is not None else TARGET_HELP)


def add_batch_sizes(parser: Parser, *, default: str | None = None,
                    help: str | None = None) -> argparse.Action:
    """--batch-sizes B,..: kept as the text given (or `default`); each command parses and checks it."""
    return parser.add_argument("--batch-sizes", default=default, metavar="B,..",
                               help=help if help is not None else BATCH_SIZES_HELP)


def add_backend(parser: Parser, choices: Sequence[str], *, default: str | None = None,
                help: str | None = None) -> argparse.Action:
    """--backend NAME, one of `choices`; the default is `default`, else the first choice."""
    if not choices:
        raise ValueError("add_backend needs at least one choice")
    chosen = default if default is not None else choices[0]
    if chosen not in choices:
        raise ValueError(f"add_backend: default {chosen!r} is not one of {', '.join(choices)}")
    text = help if help is not None else f"{BACKEND_HELP}: {', '.join(choices)} (default {chosen})"
    return parser.add_argument("--backend", choices=tuple(choices), default=chosen, help=text)


def add_plugin_lib(parser: Parser, *, default_text: str | None = None,
                   help: str | None = None) -> argparse.Action:
    """--plugin-lib PATH (args.plugin_lib, None when not given); `default_text` says where the command looks
    then, e.g. "build/plugins/libdvit_trt_plugins.so, as `make plugins` writes it"."""
    text = help if help is not None else PLUGIN_LIB_HELP + (f" (default: {default_text})" if default_text else "")
    return parser.add_argument("--plugin-lib", dest="plugin_lib", default=None, metavar="PATH", help=text)


def add_threads(parser: Parser, *, help: str | None = None) -> argparse.Action:
    """--threads N (args.threads: int, None when not given)."""
    return parser.add_argument("--threads", type=int, default=None, metavar="N",
                               help=help if help is not None else THREADS_HELP)


def add_pool(parser: Parser, *, help: str | None = None) -> argparse.Action:
    """--pool NAME (args.pool, None when not given: the backend's default pool)."""
    from .backend.onnxruntime import pools  # standard library only, like this module

    text = help if help is not None else (
        f"ONNX Runtime's intra-op threads: global (one pool the whole process shares), no-spin (a pool per session "
        f"whose idle threads sleep) or per-session (ONNX Runtime's own, spinning); default {pools.DEFAULT_POOL} "
        "(make bench compares them)")
    return parser.add_argument("--pool", choices=pools.POOLS, default=None, help=text)


def add_progress(parser: Parser, *, help: str | None = None) -> argparse.Action:
    """--no-progress (args.no_progress: bool); `progress = not args.no_progress`."""
    return parser.add_argument("--no-progress", dest="no_progress", action="store_true",
                               help=help if help is not None else PROGRESS_HELP)
