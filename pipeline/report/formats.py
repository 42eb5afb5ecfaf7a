"""How numbers and names read on the page and in the Markdown: one place, so the two never disagree."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..targets import backend_label

MINUS = "\u2212"
TIMES = "\u00d7"


def pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def signed_points(x: float | None) -> str:
    if x is None:
        return "-"
    s = f"{abs(x):.2f}"
    sign = "\u00b1" if s == "0.00" else MINUS if x < 0 else "+"
    return f"{sign}{s} points"


def ms(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}" if x >= 1 else f"{x:.3f}"


def ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}{TIMES}"


def sci(x: float | None) -> str:
    if x is None:
        return "-"
    return "0" if x == 0 else f"{x:.1e}".replace("e-0", "e-").replace("e+0", "e+")


def fixed(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def precision_label(prec: Sequence[str]) -> str:
    p = [str(x).upper() for x in prec]
    return p[0] if p and len(set(p)) == 1 else "/".join(p) or "-"


def precision_text(p: Any) -> str:
    if p is None:
        return "-"
    if isinstance(p, (list, tuple)):
        return precision_label([str(x) for x in p])
    return precision_label(str(p).split(","))


def short(sha: str | None, n: int = 12) -> str:
    return "-" if not sha else str(sha)[:n]


def backend_name(backend: str) -> str:
    """A backend as people write it: tensorrt -> TensorRT, onnxruntime-cpu -> ONNX Runtime (CPU)."""
    b = str(backend)
    low = b.lower()
    for prefix, label in (("onnxruntime", "ONNX Runtime"), ("ort", "ONNX Runtime"), ("pytorch", "PyTorch"),
                          ("torch", "PyTorch")):
        if low == prefix or low.startswith((prefix + "-", prefix + "_")):
            rest = b[len(prefix) + 1:]
            return f"{label} ({rest.upper() if rest.lower() in ('cpu', 'cuda', 'gpu') else rest})" if rest else label
    return backend_label(b)


def providers_name(providers: Sequence[str]) -> str:
    first = str(providers[0]) if providers else ""
    dev = {"CPUExecutionProvider": "CPU", "CUDAExecutionProvider": "CUDA", "TensorrtExecutionProvider": "TensorRT EP"}
    return f"ONNX Runtime ({dev.get(first, first.replace('ExecutionProvider', '') or '?')})"


def mode_label(run: dict[str, Any]) -> str:
    """chain or fused, with the I/O variant of GPU runs: "fused, CUDA graph", "chain, device I/O"."""
    mode = str(run.get("mode") or "-")
    if run.get("cuda_graph"):
        return f"{mode}, CUDA graph"
    if run.get("io") == "device":
        return f"{mode}, device I/O"
    return mode
