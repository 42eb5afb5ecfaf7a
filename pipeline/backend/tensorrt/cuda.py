"""CUDA device memory, streams, events and graphs without torch: NVIDIA's cuda-python behind one small module.

The TensorRT runner (runner.py) and the latency stage need device buffers, one stream, events
between stages and CUDA-graph capture; a Jetson has no torch to provide them. cuda-python's runtime module is
`cuda.bindings.runtime` (cuda-bindings >= 12.6.1, every 13.x) or `cuda.cudart` (older cuda-python releases);
`runtime()` probes for both. Every call goes through `call()`, which checks the returned error code and raises
CudaError with the function's name, CUDA's own name and text for the error, and what to do.

RUNTIME_FUNCTIONS lists every runtime function used here (tests/test_tensorrt_runner.py checks that the installed
cuda-python has each). Torch CUDA tensors are accepted wherever a device pointer is (`device_pointer`, zero copy:
their data_ptr()), without importing torch. Nothing here runs on import: a machine without cuda-python or a GPU
imports this module, and `gpu_available()` says why it cannot run.
"""
from __future__ import annotations

import ctypes
import importlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import numpy as np

from ...errors import DvitError

# cuda-python's runtime module, newest name first.
MODULES = ("cuda.bindings.runtime", "cuda.cudart")
INSTALL_HINT = ("install cuda-python of this device's CUDA major: `pip install -e .[cuda12]` on JetPack 6 (CUDA 12.6), "
                "`pip install -e .[cuda13]` with CUDA 13 (JetPack 7, x86 with TensorRT-RTX cu13)")
# Every runtime function this module calls.
RUNTIME_FUNCTIONS = (
    "cudaGetDeviceCount", "cudaGetDevice", "cudaGetDeviceProperties", "cudaDriverGetVersion", "cudaRuntimeGetVersion",
    "cudaGetErrorName", "cudaGetErrorString",
    "cudaMalloc", "cudaFree", "cudaMallocHost", "cudaFreeHost", "cudaMemcpyAsync",
    "cudaStreamCreateWithFlags", "cudaStreamSynchronize", "cudaStreamDestroy",
    "cudaEventCreate", "cudaEventRecord", "cudaEventSynchronize", "cudaEventElapsedTime", "cudaEventDestroy",
    "cudaStreamBeginCapture", "cudaStreamEndCapture", "cudaGraphInstantiateWithFlags", "cudaGraphLaunch",
    "cudaGraphExecDestroy", "cudaGraphDestroy",
)
# Enum and constant names this module reads from the runtime module (checked by the same test).
RUNTIME_NAMES = (
    "cudaError_t", "cudaMemcpyKind", "cudaStreamCaptureMode", "cudaStreamNonBlocking",
)
# What to do about the errors a user can meet; anything else is reported with CUDA's own text.
FIXES = {
    "cudaErrorInsufficientDriver": "the NVIDIA driver is older than cuda-python's CUDA: update the driver, or "
                                   "install cuda-python of the driver's CUDA major",
    "cudaErrorNoDevice": "no CUDA GPU is visible: run on a machine with one (check nvidia-smi, CUDA_VISIBLE_DEVICES)",
    "cudaErrorMemoryAllocation": "out of GPU memory: use a smaller batch size or close other GPU processes",
    "cudaErrorStreamCaptureUnsupported": "an operation in the chain cannot be captured: pass --no-cuda-graph",
    "cudaErrorStreamCaptureInvalidated": "an operation in the chain cannot be captured: pass --no-cuda-graph",
}


class CudaError(DvitError):
    pass


_runtime: ModuleType | None = None


def runtime() -> ModuleType:
    """cuda-python's runtime module (probed once); one line naming the install when it is absent."""
    global _runtime
    if _runtime is None:
        for name in MODULES:
            try:
                _runtime = importlib.import_module(name)
                break
            except ImportError:
                continue
        else:
            raise CudaError(f"cuda-python is not installed (no module {' or '.join(MODULES)}): {INSTALL_HINT}")
    return _runtime


def error_name(err: Any) -> str:
    rt = runtime()
    got = rt.cudaGetErrorName(err)
    return got[1].decode() if isinstance(got[1], bytes) else str(got[1])


def driver_loads() -> bool:
    """Whether the NVIDIA driver's CUDA library loads: without it every runtime call says "insufficient driver"."""
    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            ctypes.CDLL(lib)
            return True
        except OSError:
            continue
    return False


def error_text(err: Any) -> str:
    """'cudaErrorNoDevice (no CUDA-capable device is detected): <fix>'."""
    rt = runtime()
    name = error_name(err)
    text = rt.cudaGetErrorString(err)[1]
    text = text.decode() if isinstance(text, bytes) else str(text)
    fix = FIXES.get(name, "report this with the command that failed")
    if name == "cudaErrorInsufficientDriver" and not driver_loads():
        fix = "no NVIDIA driver here (libcuda does not load): run on a machine with an NVIDIA GPU and its driver"
    return f"{name} ({text}): {fix}"


def call(name: str, *args: Any) -> Any:
    """Call runtime function `name`; its error code checked, its results returned (None, one value, or a tuple)."""
    rt = runtime()
    result = getattr(rt, name)(*args)
    err, values = result[0], tuple(result[1:])
    if int(err) != 0:
        raise CudaError(f"{name} failed: {error_text(err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def gpu_available() -> tuple[bool, str]:
    """(True, what) when cuda-python is installed and sees a CUDA GPU, else (False, why not): for skips."""
    try:
        count = int(call("cudaGetDeviceCount"))
    except CudaError as e:
        return False, f"no usable CUDA GPU: {e}"
    if count == 0:
        return False, "no CUDA GPU: cudaGetDeviceCount found none"
    return True, f"{count} CUDA GPU(s)"


def device_info() -> dict[str, Any]:
    """The current device's name, compute capability and the driver/runtime CUDA versions (for reports)."""
    dev = int(call("cudaGetDevice"))
    prop = call("cudaGetDeviceProperties", dev)
    name = prop.name.decode(errors="replace").rstrip("\0") if isinstance(prop.name, bytes) else str(prop.name)
    driver, rt = int(call("cudaDriverGetVersion")), int(call("cudaRuntimeGetVersion"))
    return {"device": dev, "name": name, "compute_capability": f"{prop.major}.{prop.minor}",
            "cuda_driver": f"{driver // 1000}.{driver % 1000 // 10}", "cuda_runtime": f"{rt // 1000}.{rt % 1000 // 10}"}


# ---------------------------------------------------------------------------------------------- pointers
def is_torch_cuda(x: Any) -> bool:
    """A torch CUDA tensor, recognised without importing torch."""
    return type(x).__module__.split(".")[0] == "torch" and bool(getattr(x, "is_cuda", False)) and hasattr(x, "data_ptr")


def device_pointer(x: Any) -> int:
    """The device address of a DeviceBuffer, a contiguous torch CUDA tensor (zero copy) or an int."""
    if isinstance(x, DeviceBuffer):
        return x.ptr
    if isinstance(x, int):
        return x
    if is_torch_cuda(x):
        if not x.is_contiguous():
            raise CudaError("a non-contiguous torch tensor cannot be bound to an engine: pass tensor.contiguous()")
        return int(x.data_ptr())
    raise TypeError(f"internal: {type(x).__name__} is not a device buffer")


def torch_dtype_name(x: Any) -> str:
    """'float32' for torch.float32: numpy's name for a torch tensor's dtype (the names agree for the I/O dtypes)."""
    return str(x.dtype).removeprefix("torch.")


# ---------------------------------------------------------------------------------------------- memory
class DeviceBuffer:
    """cudaMalloc'ed memory for one tensor of `shape` and `dtype`, freed by free()."""

    def __init__(self, shape: Sequence[int], dtype: Any) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        self.ptr = int(call("cudaMalloc", max(1, self.nbytes)))

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            call("cudaFree", ptr)


class HostBuffer:
    """Page-locked host memory (cudaMallocHost) seen as a numpy array: what asynchronous copies need."""

    def __init__(self, shape: Sequence[int], dtype: Any) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        self.ptr = int(call("cudaMallocHost", max(1, self.nbytes)))
        raw = (ctypes.c_ubyte * max(1, self.nbytes)).from_address(self.ptr)
        self.array: np.ndarray = np.frombuffer(raw, dtype=np.uint8)[: self.nbytes].view(self.dtype).reshape(self.shape)

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            self.array = np.empty(0, self.dtype)
            call("cudaFreeHost", ptr)


def _memcpy_kind(name: str) -> Any:
    return getattr(runtime().cudaMemcpyKind, name)


def copy_to_device(dst: Any, src: np.ndarray, stream: Stream) -> None:
    """Asynchronous host-to-device copy of `src` (keep it alive until the stream is synchronized)."""
    src = np.ascontiguousarray(src)
    call("cudaMemcpyAsync", device_pointer(dst), src.ctypes.data, src.nbytes, _memcpy_kind("cudaMemcpyHostToDevice"),
         stream.handle)


def copy_to_host(dst: np.ndarray, src: Any, stream: Stream) -> None:
    """Asynchronous device-to-host copy into the contiguous array `dst` (valid after the stream is synchronized)."""
    if not dst.flags.c_contiguous:
        raise ValueError("internal: copy_to_host needs a contiguous destination")
    call("cudaMemcpyAsync", dst.ctypes.data, device_pointer(src), dst.nbytes, _memcpy_kind("cudaMemcpyDeviceToHost"),
         stream.handle)


def copy_device_to_device(dst: Any, src: Any, nbytes: int, stream: Stream) -> None:
    call("cudaMemcpyAsync", device_pointer(dst), device_pointer(src), int(nbytes),
         _memcpy_kind("cudaMemcpyDeviceToDevice"), stream.handle)


# ---------------------------------------------------------------------------------------------- streams, events
class Stream:
    """One non-blocking CUDA stream; `ptr` is the integer handle TensorRT's execute_async_v3 takes."""

    def __init__(self) -> None:
        self.handle: Any = call("cudaStreamCreateWithFlags", runtime().cudaStreamNonBlocking)

    @property
    def ptr(self) -> int:
        return int(self.handle)

    def synchronize(self) -> None:
        call("cudaStreamSynchronize", self.handle)

    def destroy(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            call("cudaStreamDestroy", handle)


class Event:
    def __init__(self) -> None:
        self.handle: Any = call("cudaEventCreate")

    def record(self, stream: Stream) -> None:
        call("cudaEventRecord", self.handle, stream.handle)

    def synchronize(self) -> None:
        call("cudaEventSynchronize", self.handle)

    def elapsed_ms(self, start: Event) -> float:
        """Milliseconds from `start` to this event (both recorded, this one completed)."""
        return float(call("cudaEventElapsedTime", start.handle, self.handle))

    def destroy(self) -> None:
        if self.handle is not None:
            handle, self.handle = self.handle, None
            call("cudaEventDestroy", handle)


class CudaGraph:
    """Work captured from a stream once (`with graph.capture(stream): ...enqueue...`), replayed by launch()."""

    def __init__(self) -> None:
        self.graph: Any = None
        self.exec: Any = None

    @contextmanager
    def capture(self, stream: Stream) -> Iterator[None]:
        if self.exec is not None:
            raise RuntimeError("internal: this CUDA graph is already captured")
        mode = runtime().cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        call("cudaStreamBeginCapture", stream.handle, mode)
        try:
            yield
        except BaseException:
            # End the capture so the stream stays usable, and destroy the (partial) graph it may return; the
            # capture's own error is the one raised.
            err, graph = runtime().cudaStreamEndCapture(stream.handle)
            if int(err) == 0 and graph is not None and int(graph) != 0:
                runtime().cudaGraphDestroy(graph)
            raise
        self.graph = call("cudaStreamEndCapture", stream.handle)
        self.exec = call("cudaGraphInstantiateWithFlags", self.graph, 0)  # on failure, destroy() frees self.graph

    @property
    def captured(self) -> bool:
        return self.exec is not None

    def launch(self, stream: Stream) -> None:
        call("cudaGraphLaunch", self.exec, stream.handle)

    def destroy(self) -> None:
        if self.exec is not None:
            exec_, self.exec = self.exec, None
            call("cudaGraphExecDestroy", exec_)
        if self.graph is not None:
            graph, self.graph = self.graph, None
            call("cudaGraphDestroy", graph)
