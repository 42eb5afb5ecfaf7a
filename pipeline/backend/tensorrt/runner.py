"""TensorRT engines behind the runner interface: numpy arrays in, numpy arrays out, like ONNX Runtime.

A TensorRTRunner runs one or more serialized plans back to back on ONE CUDA stream with `execute_async_v3` and
tensor addresses (`set_tensor_address`). Device buffers are allocated once, sized from each engine's static I/O
shapes and dtypes. With several plans it is the stage chain on the device: stage i's output buffer (`tokens_{i+1}`)
is bound as stage i+1's input address, so nothing crosses to the host between stages. The whole chain can be
captured into a CUDA graph once (`capture_graph()`) and replayed (`launch()`).

Before anything is deserialized (before any CUDA call) every plan's header is checked against the installed
backend (plan_header.py), and a foreign plan is refused with plan_header's one line; the plugin library
(DvitTopKGather) is loaded into TensorRT's registry first when the engines need it, and a missing one names
`make plugins`. The TensorRT API used here is checked against 10.3, 10.13, 11.1 and TensorRT-RTX by
tools/check_trt_api.py; the CUDA calls go through cuda.py (cuda-python, no torch).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import DvitError, ManifestError
from ...runners.base import Runner
from . import cuda as cb
from . import plugins
from .loader import Backend, BackendError
from .loader import load as load_backend
from .plan_header import check_compatible, read_plan_header

if TYPE_CHECKING:  # annotations only; at run time `trt` is the module of the Backend in hand
    import tensorrt as trt


# ---------------------------------------------------------------------------------------------- checks
def check_plan(path: str | os.PathLike[str], b: Backend) -> str | None:
    """Refuse (one line) a plan the installed backend cannot load, from its header alone; a plan whose header does
    not say which release built it is let through, and the note returned."""
    header = read_plan_header(path)
    problem = check_compatible(header, b.name, b.version)
    if problem is None:
        return None
    if problem.startswith("unknown:") and header.backend == b.name:
        return problem
    raise BackendError(problem)


def backend_for_plans(paths: Sequence[str | os.PathLike[str]]) -> Backend:
    """The backend (TensorRT or TensorRT-RTX) named by the first plan's header, imported and probed."""
    header = read_plan_header(paths[0])
    if header.backend is None:
        raise BackendError(f"{Path(paths[0]).name} is not a TensorRT plan (tag {header.tag!r}): pass engines built "
                           "by `dvit build`")
    return load_backend(header.backend)


# ---------------------------------------------------------------------------------------------- one engine
@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    is_input: bool

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


class Engine:
    """One deserialized plan: its execution context and static I/O specs. Every TensorRT call of the runner is
    made here, on annotated names, so that the API-surface check follows each one."""

    def __init__(self, b: Backend, path: Path, name: str) -> None:
        self.name, self.path, self.label = name, path, b.label
        self.logger: trt.Logger = b.trt.Logger(b.trt.Logger.WARNING)
        self.runtime: trt.Runtime = b.trt.Runtime(self.logger)
        engine: trt.ICudaEngine | None = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise BackendError(f"{b.label} could not deserialize {path} (its log above says why): rebuild it with "
                               "`dvit build`")
        self.engine: trt.ICudaEngine = engine
        context: trt.IExecutionContext | None = engine.create_execution_context()
        if context is None:
            raise BackendError(f"{b.label} could not create an execution context for {path} (out of GPU memory?)")
        self.context: trt.IExecutionContext = context
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []
        for i in range(int(engine.num_io_tensors)):
            tensor = str(engine.get_tensor_name(i))
            mode: trt.TensorIOMode = engine.get_tensor_mode(tensor)
            dims: trt.Dims = engine.get_tensor_shape(tensor)
            dtype: trt.DataType = engine.get_tensor_dtype(tensor)
            shape = tuple(int(d) for d in dims)
            if any(d < 0 for d in shape):
                raise BackendError(f"{path.name}: tensor {tensor} has a dynamic shape {list(shape)}: build engines "
                                   "from the static graph sets (`dvit build`)")
            try:
                np_dtype = np.dtype(b.trt.nptype(dtype))
            except TypeError as e:
                raise BackendError(f"{path.name}: tensor {tensor} is {dtype}, which numpy cannot hold: rebuild with "
                                   "FP32/INT64 graph inputs and outputs") from e
            is_input = mode == b.trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(TensorSpec(tensor, shape, np_dtype, is_input))

    def bind(self, tensor: str, ptr: int) -> None:
        if not self.context.set_tensor_address(tensor, int(ptr)):
            raise BackendError(f"{self.label} refused the address of {tensor} in {self.path.name}")

    def enqueue(self, stream_ptr: int) -> None:
        if not self.context.execute_async_v3(stream_ptr):
            raise BackendError(f"{self.label}: {self.path.name} failed to run (TensorRT's log above says why)")


# ---------------------------------------------------------------------------------------------- the runner
class TensorRTRunner(Runner):
    """Plans run back to back on one CUDA stream: one plan is an engine runner, several a device-resident stage
    chain (see the module docstring). `plans` are (name, path) pairs in order; `backend` defaults to the one the
    first plan's header names. `copy_outputs` limits what infer() copies back (default: every output, as
    runners.chain.StageChain returns every stage's outputs)."""

    def __init__(self, plans: Sequence[tuple[str, str | os.PathLike[str]]], backend: Backend | None = None, *,
                 name: str | None = None, plugin_library: str | os.PathLike[str] | None = None,
                 copy_outputs: Sequence[str] | None = None) -> None:
        if not plans:
            raise ValueError("internal: a TensorRT runner needs at least one plan")
        paths = [Path(p) for _, p in plans]
        for p in paths:
            if not p.is_file():
                raise DvitError(f"engine {p} not found: build it with `dvit build`")
        b = backend or backend_for_plans(paths)
        # Refuse foreign plans and a missing plugin library before any CUDA call or deserialization.
        self.notes = [n for p in paths if (n := check_plan(p, b))]
        if plugin_library is not None:
            plugins.load(b, plugin_library)
        self.backend = b
        self.name = name or plans[0][0]
        self.engines: list[Engine] = []
        self._buffers: dict[str, cb.DeviceBuffer] = {}
        self._host: dict[str, cb.HostBuffer] = {}
        self._rebound: set[str] = set()
        self.graph: cb.CudaGraph | None = None
        self.stream: cb.Stream | None = None
        try:
            self.stream = cb.Stream()
            self.engines = [Engine(b, p, n) for (n, _), p in zip(plans, paths)]
            self._wire()
            self.copy_outputs = list(copy_outputs) if copy_outputs is not None else self.output_names
            for n in [*self.input_names, *self.copy_outputs]:
                spec = self.spec(n)
                self._host[n] = cb.HostBuffer(spec.shape, spec.dtype)
        except BaseException:
            self.close()
            raise
        self.batch = self.engines[0].inputs[0].shape[0] if self.engines[0].inputs[0].shape else None

    def _wire(self) -> None:
        """Allocate each tensor once and bind it: stage i+1's input is stage i's output buffer of that name."""
        for i, e in enumerate(self.engines):
            for spec in e.inputs:
                buf = self._buffers.get(spec.name)
                if buf is None:
                    if i > 0:
                        raise ManifestError(f"{e.name} takes {spec.name}, which no earlier stage produces: the engines "
                                            "do not follow the export contract; rebuild them from one graph set")
                    buf = self._buffers[spec.name] = cb.DeviceBuffer(spec.shape, spec.dtype)
                elif (buf.shape, buf.dtype) != (spec.shape, spec.dtype):
                    raise ManifestError(f"{e.name} takes {spec.name} as {list(spec.shape)} {spec.dtype}, the stage "
                                        f"before makes {list(buf.shape)} {buf.dtype}: rebuild them from one graph set")
                e.bind(spec.name, buf.ptr)
            for spec in e.outputs:
                if spec.name in self._buffers:
                    raise ManifestError(f"{e.name} produces {spec.name} a second time: rebuild from one graph set")
                buf = self._buffers[spec.name] = cb.DeviceBuffer(spec.shape, spec.dtype)
                e.bind(spec.name, buf.ptr)

    # -- the Runner interface
    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.engines[0].inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for e in self.engines for s in e.outputs]

    def spec(self, tensor: str) -> TensorSpec:
        for e in self.engines:
            for s in [*e.inputs, *e.outputs]:
                if s.name == tensor:
                    return s
        raise ManifestError(f"{self.name} has no tensor {tensor} (it has {', '.join(self.output_names)}): the "
                            "engines do not follow the export contract; rebuild them from one graph set")

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.set_inputs(feeds)
        self.launch()
        self.fetch_outputs()
        self.synchronize()
        return {n: self._host[n].array.copy() for n in self.copy_outputs}

    # -- the pieces, for timing
    @property
    def _stream(self) -> cb.Stream:
        if self.stream is None:
            raise RuntimeError("internal: the runner is closed")
        return self.stream

    def set_inputs(self, feeds: Mapping[str, Any]) -> None:
        """numpy arrays are copied (through page-locked memory) into the input buffers; device tensors (a torch
        CUDA tensor, a DeviceBuffer) are bound in place, zero copy, or copied on the device once a CUDA graph
        has fixed the addresses. The caller keeps device tensors alive and written before the next enqueue."""
        first = self.engines[0]
        for spec in first.inputs:
            value = feeds[spec.name]
            own = self._buffers[spec.name]
            if isinstance(value, np.ndarray):
                if value.shape != spec.shape:
                    raise DvitError(f"{self.name}: {spec.name} has shape {list(value.shape)}, the engine takes "
                                    f"{list(spec.shape)}: feed batches of {spec.shape[0]}")
                np.copyto(self._host[spec.name].array, value, casting="same_kind")
                if spec.name in self._rebound:
                    first.bind(spec.name, own.ptr)
                    self._rebound.discard(spec.name)
                cb.copy_to_device(own, self._host[spec.name].array, self._stream)
                continue
            if cb.is_torch_cuda(value):
                got = (tuple(value.shape), cb.torch_dtype_name(value))
            elif isinstance(value, cb.DeviceBuffer):
                got = (value.shape, value.dtype.name)
            else:
                got = (spec.shape, spec.dtype.name)  # a bare address: the caller vouches for it
            if got != (spec.shape, spec.dtype.name):
                raise DvitError(f"{self.name}: {spec.name} is a {list(got[0])} {got[1]} tensor on the device, the "
                                f"engine takes {list(spec.shape)} {spec.dtype}")
            ptr = cb.device_pointer(value)
            if self.graph is not None:
                cb.copy_device_to_device(own, ptr, spec.nbytes, self._stream)
            else:
                first.bind(spec.name, ptr)
                self._rebound.add(spec.name)

    def enqueue(self, events: Sequence[cb.Event] | None = None) -> None:
        """Every engine on the stream, in order. With two events, one is recorded before the first engine and one
        after the last (the whole step's GPU time, the same cost for any number of engines); with
        len(engines) + 1, one around each engine (per-stage GPU times)."""
        stream = self._stream
        n = len(self.engines)
        if events and len(events) not in (2, n + 1):
            raise ValueError(f"internal: enqueue takes 2 or {n + 1} events, not {len(events)}")
        around_each = events is not None and len(events) == n + 1
        if events:
            events[0].record(stream)
        for i, e in enumerate(self.engines):
            e.enqueue(stream.ptr)
            if events and (around_each or i == n - 1):
                events[i + 1 if around_each else 1].record(stream)

    def fetch_outputs(self, names: Sequence[str] | None = None) -> None:
        for n in self.copy_outputs if names is None else names:
            cb.copy_to_host(self._host[n].array, self._buffers[n], self._stream)

    def synchronize(self) -> None:
        self._stream.synchronize()

    def device_buffer(self, tensor: str) -> cb.DeviceBuffer:
        return self._buffers[tensor]

    def capture_graph(self) -> None:
        """Capture the chain's enqueue into a CUDA graph (after one ordinary run, which TensorRT needs first)."""
        if self.graph is not None:
            return
        for tensor in self._rebound:  # the graph keeps the addresses it was captured with: our own buffers
            self.engines[0].bind(tensor, self._buffers[tensor].ptr)
        self._rebound.clear()
        self.enqueue()
        self.synchronize()
        graph = cb.CudaGraph()
        try:
            with graph.capture(self._stream):
                self.enqueue()
        except BaseException:
            graph.destroy()
            raise
        self.graph = graph

    def launch(self) -> None:
        """Replay the captured graph (enqueue() when none was captured)."""
        if self.graph is None:
            self.enqueue()
        else:
            self.graph.launch(self._stream)

    def close(self) -> None:
        if self.stream is not None:
            try:
                self.stream.synchronize()
            except cb.CudaError:
                pass
        if self.graph is not None:
            self.graph.destroy()
            self.graph = None
        self.engines = []  # contexts and engines go before the memory they were bound to
        for buf in self._buffers.values():
            buf.free()
        for host in self._host.values():
            host.free()
        self._buffers, self._host = {}, {}
        if self.stream is not None:
            self.stream.destroy()
            self.stream = None
