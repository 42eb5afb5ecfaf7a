"""ONNX Runtime: the one session factory of the project, and the runner around it.

Plugin graphs (DvitTopKGather nodes) run through the Python reference op (plugins.py), found automatically, so
every graph set runs here, whatever stage wrote it; the thread pools are pools.py's.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, DvitError
from ...runners.base import Runner
from . import plugins, pools

PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def session(model: Any, providers: str = "cpu", threads: int | None = None, optimize: bool = True, *,
            pool: str | None = None) -> Any:
    """An InferenceSession of a ModelProto or an .onnx path.

    providers: "cpu" or "cuda" (refused, not silently replaced, when ONNX Runtime falls back to the CPU);
    threads: intra-op threads (None keeps ONNX Runtime's default); optimize=False turns ONNX Runtime's graph
    rewrites off, so that two graphs differing only in how an op is expressed compute the same bits (its Cast
    elimination in FP16 graphs otherwise depends on the neighbouring ops); pool: how the sessions of the process
    share the cores (pools.py; None: the global pool where the process has one, else ONNX Runtime's own; the
    runtime commands take pools.default_pool()).
    """
    import onnx
    import onnxruntime as ort  # type: ignore[import-untyped]

    if providers not in PROVIDERS:
        raise ConfigError(f"unknown provider '{providers}': use {' or '.join(PROVIDERS)}")
    what = "the graph" if isinstance(model, onnx.ModelProto) else str(model)
    if not isinstance(model, onnx.ModelProto):
        path = Path(os.fspath(model))
        if not path.is_file():
            raise DvitError(f"ONNX file {path} not found: pass the path of an .onnx file")
        model = onnx.load(str(path))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    pools.apply(so, pool, threads)
    model = plugins.prepare(so, model)
    chosen = PROVIDERS[providers]
    try:
        sess = ort.InferenceSession(model.SerializeToString(), sess_options=so, providers=chosen)
    except Exception as e:  # ORT raises its own Fail/InvalidGraph/NotImplemented kinds
        raise DvitError(f"ONNX Runtime cannot load {what} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
    if chosen[0] != "CPUExecutionProvider" and sess.get_providers()[0] != chosen[0]:
        raise DvitError(f"{chosen[0]} is not usable here (ONNX Runtime fell back to CPU): pass --providers cpu")
    return sess


class OnnxRuntimeRunner(Runner):
    """A graph in ONNX Runtime behind the runner interface (see runners.base.Runner)."""

    def __init__(self, model: Any, name: str | None = None, providers: str = "cpu", threads: int | None = None,
                 optimize: bool = True, *, pool: str | None = None) -> None:
        self.session: Any = session(model, providers, threads, optimize, pool=pool)
        self.name = name or (Path(os.fspath(model)).stem if isinstance(model, (str, os.PathLike)) else "graph")
        self.providers = list(self.session.get_providers())
        shape = self.session.get_inputs()[0].shape
        self.batch = int(shape[0]) if shape and isinstance(shape[0], int) else None

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = self.output_names
        return dict(zip(names, self.session.run(names, {k: np.ascontiguousarray(v) for k, v in feeds.items()})))

    def close(self) -> None:
        """Drop the session (ONNX Runtime frees it with its last reference); the runner cannot run after."""
        self.session = None


def run(model: Any, feeds: dict[str, np.ndarray], optimize: bool = True) -> dict[str, np.ndarray]:
    """One-off CPU run of a graph (ModelProto or path) on `feeds`; outputs by name."""
    return OnnxRuntimeRunner(model, optimize=optimize).infer(feeds)
