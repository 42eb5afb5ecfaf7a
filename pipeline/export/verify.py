"""The exporter's own gate: each finished graph in ONNX Runtime against PyTorch on real images.

Stricter than `dvit validate` and earlier: logits within LOGITS_ATOL, tokens within TOKENS_RTOL of the residual
stream's scale, kept indices identical, the one allowance being tokens whose PyTorch keep scores are closer than
SCORE_TIE_ATOL (an order that float rounding decides either way), counted in the manifest. Any failure stops the
export before anything is written.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..backend.onnxruntime.runner import OnnxRuntimeRunner
from ..errors import DvitError
from ..runners.base import run_batched
from .modules import GraphSpec

LOGITS_ATOL = 1e-4
# Intermediate tokens live on the residual stream, whose scale grows with depth: compare them relative to it.
TOKENS_RTOL = 1e-4
# Keep scores closer than this are a near-tie: float rounding may order them either way (see check_selection).
SCORE_TIE_ATOL = 1e-5


def torch_reference(specs_by_batch: list[GraphSpec], images: Tensor) -> dict[str, dict[str, Any]]:
    """PyTorch inputs, outputs and keep scores of every graph of one batch size on `images`.

    {graph name: {tensor name: array, ..., "scores": [keep scores of each pruning stage the graph runs]}}; the
    scores are those of the stage's input tokens, in PyTorch's token order.
    """
    ref: dict[str, dict[str, Any]] = {}
    scores: list[np.ndarray] = []
    with torch.no_grad():
        x = images
        for spec in specs_by_batch:
            if spec.kind != "stage":
                continue
            stage_scores = []
            if spec.index:
                model: Any = spec.module.model
                stage_scores = [model.keep_scores(spec.index, x).numpy()]
                scores.extend(stage_scores)
            out = spec.module(x)
            outs = out if isinstance(out, tuple) else (out,)
            ref[spec.name] = {spec.inputs[0][0]: x.numpy(), **{n: o.numpy() for n, o in zip(spec.outputs, outs)},
                              "scores": stage_scores}
            x = outs[0]
        for spec in specs_by_batch:
            if spec.kind == "stage":
                continue
            out = spec.module(images)
            outs = out if isinstance(out, tuple) else (out,)
            ref[spec.name] = {"images": images.numpy(), **{n: o.numpy() for n, o in zip(spec.outputs, outs)},
                              "scores": scores if spec.kind == "fused" else []}
    return ref


@dataclass
class SelectionCheck:
    """Per image: "identical", "tie-order" (same kept tokens, near-tied ones in another order) or "tie-set"
    (a near-tie at the keep boundary made the two sides keep different tokens: later outputs are incomparable)."""

    status: list[str]
    swaps: int = 0
    max_tie_gap: float = 0.0


def check_selection(
    got: Sequence[np.ndarray], want: Sequence[np.ndarray], scores: Sequence[np.ndarray], name: str,
    nested: bool = True,
) -> SelectionCheck:
    """Kept indices of consecutive pruning stages, ONNX Runtime (got) against PyTorch (want), image by image.

    They must be identical. The one exception is a near-tie: two tokens whose PyTorch keep scores differ by less
    than SCORE_TIE_ATOL, an order that float rounding decides either way (ONNX Runtime's scores differ from
    PyTorch's by ~1e-7). Later stages index into their own input, whose order follows the earlier stage, so the
    comparison runs on token ids of the graph's input. Without `nested` (the spatial families), every location
    ranks the whole map: its indices are positions of that map and are compared as they are.
    """
    n_img = want[0].shape[0] if want else 0
    check = SelectionCheck(["identical"] * n_img)
    for b in range(n_img):
        ids_w = ids_g = np.arange(scores[0].shape[1])
        for s in range(len(want)):
            w, g = ids_w[want[s][b]], ids_g[got[s][b]]
            if not np.array_equal(w, g):
                by_id = dict(zip(ids_w.tolist(), scores[s][b].tolist()))
                for j in np.nonzero(w != g)[0]:
                    a, c = int(g[j]), int(w[j])
                    gap = abs(by_id[a] - by_id[c]) if a in by_id else float("inf")
                    if not gap < SCORE_TIE_ATOL:
                        raise DvitError(
                            f"{name}: kept indices of pruning stage {s + 1} differ from PyTorch on image {b} (token {a} "
                            f"instead of {c}, keep scores {gap:.3g} apart): report this as a bug, with the checkpoint"
                        )
                    check.swaps += 1
                    check.max_tie_gap = max(check.max_tie_gap, gap)
                if set(w.tolist()) != set(g.tolist()):
                    check.status[b] = "tie-set"
                    break
                check.status[b] = "tie-order"
            if nested:
                ids_w, ids_g = w, g
    return check


def compare(spec: GraphSpec, got: dict[str, np.ndarray], want: dict[str, Any]) -> dict[str, Any]:
    """Check ONNX Runtime's outputs against PyTorch's; raises on any difference beyond float rounding.

    Kept indices: see check_selection. Logits: max abs error < LOGITS_ATOL. Tokens: within TOKENS_RTOL of the
    residual stream's scale (rows matched by token where near-tied tokens were kept in another order). Images
    whose kept tokens differ by a boundary near-tie are left out of the float comparison and counted.
    """
    for out in spec.outputs:
        if got[out].shape != want[out].shape:
            raise DvitError(f"{spec.rel}: output {out} is {got[out].shape} in ONNX Runtime but {want[out].shape} in PyTorch")
    sel = [o for o in spec.outputs if o.startswith("kept_indices")]
    n_img = got[spec.outputs[0]].shape[0]
    check = (
        check_selection([got[o] for o in sel], [want[o] for o in sel], want["scores"], spec.rel,
                        spec.nested_selection)
        if sel else SelectionCheck(["identical"] * n_img)
    )
    comparable = [b for b in range(n_img) if check.status[b] != "tie-set"]
    if not comparable:
        raise DvitError(
            f"{spec.rel}: every verification image hit a near-tie of keep scores at a keep boundary, so nothing could be "
            "compared: pass more --verify-images"
        )
    errs: dict[str, float] = {}
    for out in spec.outputs:
        if out in sel:
            continue
        a, b = got[out][comparable], np.array(want[out][comparable])
        if out.startswith("tokens_") and sel:
            for r, img in enumerate(comparable):
                if check.status[img] == "tie-order":  # match rows by token: class token, then kept tokens
                    pos = {int(v): p for p, v in enumerate(want[sel[0]][img])}
                    b[r] = want[out][img][[0, *(1 + pos[int(v)] for v in got[sel[0]][img])]]
        err = float(np.abs(a.astype(np.float64) - b).max())
        errs[out] = err
        tol = LOGITS_ATOL if out == "logits" else TOKENS_RTOL * max(1.0, float(np.abs(b).max()))
        if not err < tol:
            raise DvitError(f"{spec.rel}: {out} differs from PyTorch by {err:.3g} (limit {tol:.3g}): report this as a bug")
    return {
        "images": n_img,
        "max_abs_err": errs,
        "kept_indices": {"identical": check.status.count("identical"), "near_tie_order": check.status.count("tie-order"),
                         "near_tie_boundary": check.status.count("tie-set"), "max_tie_score_gap": check.max_tie_gap}
        if sel else None,
    }


def verify(spec: GraphSpec, model: Any, ref: dict[str, Any]) -> dict[str, Any]:
    """Run the finished graph in ONNX Runtime (CPU), batch by batch, against the PyTorch reference."""
    in_name = spec.inputs[0][0]
    got = run_batched(OnnxRuntimeRunner(model, spec.rel), {in_name: ref[in_name]})
    return compare(spec, {o: got[o] for o in spec.outputs}, ref)
