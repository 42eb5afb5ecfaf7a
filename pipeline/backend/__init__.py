"""Backends: one package per inference engine (onnxruntime/, tensorrt/), and the one factory of runners.

`graph_runners(gs, batch)` makes the runners of one batch size of any graph set, for the backend its kind asks
(export, precision and plugin graphs: ONNX Runtime; engine sets: TensorRT), so validate, latency, the plugin pass
and the tests never build runners by hand. The result is a context manager that closes every runner it made.

Importing this module imports no backend library; making runners imports the one they need.
"""
from __future__ import annotations

import os
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import ConfigError, DvitError
from ..runners.base import Runner
from ..runners.chain import StageChain

if TYPE_CHECKING:
    from ..graphset import BatchGraphs, GraphSet

BACKENDS = ("onnxruntime", "tensorrt")
KINDS = {"onnxruntime": ("export", "precision", "plugin"), "tensorrt": ("engine",)}


def backend_for(gs: GraphSet) -> str:
    """The backend that runs a graph set of this kind."""
    return "tensorrt" if gs.kind == "engine" else "onnxruntime"


@dataclass
class GraphRunners:
    """The runners of one batch size of a graph set: `chain` (the stage graphs composed, stage i fed what stage
    i-1 produced), `stages` (each stage alone), `fused` and the dense `teacher` (None when not asked for or absent).
    `with GraphRunners(...) as r:` closes them all; so does close()."""

    backend: str
    batch: int
    chain: Runner
    stages: list[Runner]
    fused: Runner
    teacher: Runner | None = None
    _closer: ExitStack = field(default_factory=ExitStack, repr=False)

    def __enter__(self) -> GraphRunners:  # noqa: PYI034 (typing.Self needs Python 3.11; JetPack 6 has 3.10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closer.close()

    @property
    def stage_chain(self) -> StageChain:
        """`chain` as a chain of stage runners (what a comparison needs to run stages alone too)."""
        if not isinstance(self.chain, StageChain):
            raise TypeError("internal: a device-resident chain has no stage runners; make the runners without "
                            "device_chain")
        return self.chain


def graph_runners(gs: GraphSet, batch: int | None = None, *, backend: str | None = None, providers: str = "cpu",
                  threads: int | None = None, pool: str | None = None,
                  plugin_lib: str | os.PathLike[str] | None = None, teacher: bool = False,
                  device_chain: bool = False, copy_outputs: list[str] | None = None) -> GraphRunners:
    """Runners of batch size `batch` (graphset's default when None) of `gs` for `backend` (default: the kind's).

    ONNX Runtime: `providers` ("cpu"/"cuda"), `threads` intra-op threads, `pool` (None: pools.default_pool()).
    TensorRT (engine sets, a GPU): `plugin_lib` overrides the plugin library the set names; `device_chain` makes
    `chain` one runner that keeps the tensors between stages on the device (what latency times; `stages` is then
    empty) instead of a chain of single-engine runners (what validation needs, to feed each stage the
    reference's tokens);
    `copy_outputs` limits what the device chain and fused runner copy back."""
    backend = backend or backend_for(gs)
    if backend not in BACKENDS:
        raise ConfigError(f"unknown --backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if gs.kind not in KINDS[backend]:
        raise DvitError(f"{gs.root} holds {gs.kind} graphs, which {backend} does not run: pass "
                        f"{' or '.join(KINDS[backend])} graph sets")
    graphs = gs.batch(batch)
    with ExitStack() as closer:  # a runner that fails to open closes the ones made before it
        if backend == "onnxruntime":
            chain, stages, fused, dense = _onnxruntime(graphs, providers, threads, pool, teacher, closer)
        else:
            chain, stages, fused, dense = _tensorrt(gs, graphs, plugin_lib, teacher, device_chain, copy_outputs,
                                                    closer)
        return GraphRunners(backend, graphs.batch, chain, stages, fused, dense, closer.pop_all())


def _onnxruntime(graphs: BatchGraphs, providers: str, threads: int | None, pool: str | None, teacher: bool,
                 closer: ExitStack) -> tuple[Runner, list[Runner], Runner, Runner | None]:
    from .onnxruntime import pools
    from .onnxruntime.runner import OnnxRuntimeRunner

    pool = pool or pools.default_pool()

    def make(path: os.PathLike[str] | str, name: str) -> Runner:
        return closer.enter_context(OnnxRuntimeRunner(path, name, providers, threads, pool=pool))

    stages = [make(e.path, e.name) for e in graphs.stages]
    fused = make(graphs.fused.path, "fused")
    dense = make(graphs.teacher.path, "teacher") if teacher and graphs.teacher is not None else None
    return StageChain(stages, f"stage chain (b{graphs.batch})"), stages, fused, dense


def _tensorrt(gs: GraphSet, graphs: BatchGraphs, plugin_lib: str | os.PathLike[str] | None, teacher: bool,
              device_chain: bool, copy_outputs: list[str] | None,
              closer: ExitStack) -> tuple[Runner, list[Runner], Runner, Runner | None]:
    from .tensorrt import plugins
    from .tensorrt.cuda import gpu_available
    from .tensorrt.runner import TensorRTRunner, backend_for_plans

    ok, why = gpu_available()
    if not ok:
        raise DvitError(f"running engines needs a GPU ({why}): run the graph set they were built from in ONNX "
                        "Runtime instead")
    b = backend_for_plans([graphs.fused.path])
    lib = plugins.for_graph_set(gs, plugin_lib)

    def make(plans: list[tuple[str, os.PathLike[str] | str]], name: str, library: object = lib,
             copy: list[str] | None = None) -> TensorRTRunner:
        return closer.enter_context(TensorRTRunner(plans, b, name=name, plugin_library=library,  # type: ignore[arg-type]
                                                   copy_outputs=copy))

    stages: list[Runner] = []
    if device_chain:
        chain: Runner = make([(e.name, e.path) for e in graphs.stages], f"TensorRT stage chain (b{graphs.batch})",
                             copy=copy_outputs)
    else:
        stages = [make([(e.name, e.path)], e.name) for e in graphs.stages]
        chain = StageChain(stages, f"TensorRT stage chain (b{graphs.batch})")
    fused = make([("fused", graphs.fused.path)], "fused", copy=copy_outputs)
    dense = make([("teacher", graphs.teacher.path)], "teacher", None) if teacher and graphs.teacher else None
    return chain, stages, fused, dense
