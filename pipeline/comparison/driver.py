"""The comparison driver: a candidate (a stage chain and its fused graph) against a reference runner, on images.

Conventions
-----------
* stage chain: stage 0 takes the images, stage i >= 1 the tokens stage i-1 produced (the candidate all the way);
  isolated: stage i >= 1 takes the reference's tokens at its input instead.
* boundary i: the tensor entering stage i (tokens_i), compared with the reference's tensor there, token by
  token: each row is mapped to its original patch position (the kept indices of the earlier pruning points
  composed; the class token to itself) and only positions both sides kept are compared, per image. A kept set
  chosen in another order is thus no numeric error, and where the candidate kept another set (shown by the
  kept-token metrics) its other tokens are left out rather than paired with unrelated ones; tokens_compared
  (class token included) against tokens_reference says how many were compared.
* kept tokens: relative indices are composed through the stages into positions of the original patch grid;
  per sample IoU = |A n B| / |A u B| of the kept sets.
* accuracy/agreement are fractions in [0, 1]; "agreement" = same top-1 class as the reference.

The reference must produce `logits` and `kept_indices_i`; boundary and isolated metrics need its `tokens_i` too
and are left out (None) without them. A reference taking any batch size runs on chunks of REF_CHUNK images; the
candidate runs at its static batch size, the last partial batch padded by repeating its last image (padded rows
are never scored).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..image_slice import ImageSlice
from ..runners.base import Runner, run_batched
from ..runners.chain import StageChain
from .metrics import ErrStats, KeptStats, TokenErrStats, compose, compose_all

REF_CHUNK = 256


@dataclass
class _Acc:
    """Everything accumulated over the images: per-sample logits and kept ids, running error statistics."""

    n: int
    keep_counts: list[int]
    logits: dict[str, np.ndarray] = field(default_factory=dict)
    ids: dict[str, list[np.ndarray]] = field(default_factory=dict)
    err: dict[str, ErrStats] = field(default_factory=dict)
    bnd_chain: list[TokenErrStats] = field(default_factory=list)
    bnd_iso: list[TokenErrStats] = field(default_factory=list)
    kept: dict[str, list[KeptStats]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        S = len(self.keep_counts) + 1
        self.ids = {k: [np.zeros((self.n, kc), np.int64) for kc in self.keep_counts] for k in ("reference", "chain", "fused")}
        self.err = {k: ErrStats() for k in ("chain_logits", "fused_logits", "chain_vs_fused", "isolated_logits")}
        self.bnd_chain = [TokenErrStats() for _ in range(S)]
        self.bnd_iso = [TokenErrStats() for _ in range(S)]
        self.kept = {k: [KeptStats(i + 1, kc) for i, kc in enumerate(self.keep_counts)]
                     for k in ("chain", "fused", "isolated")}

    def put_logits(self, key: str, dst: slice, x: np.ndarray) -> None:
        if key not in self.logits:
            self.logits[key] = np.zeros((self.n, x.shape[1]), np.float32)
        self.logits[key][dst] = x


@dataclass
class Comparison:
    """The result (JSON-ready) and the per-sample arrays that batch_consistency compares against."""

    result: dict[str, Any]
    logits: dict[str, np.ndarray]
    ids: dict[str, list[np.ndarray]]
    nested: bool = True  # kept indices nest (token pruning) or are grid positions already (spatial families)


def _kept(out: dict[str, np.ndarray], S: int, nested: bool = True) -> list[np.ndarray]:
    return compose_all([out[f"kept_indices_{i}"] for i in range(1, S)], nested)


def _batch(chain: StageChain, fused: Runner, S: int, s: int, v: int, x: np.ndarray, ref: dict[str, np.ndarray],
           ref_ids: list[np.ndarray], tokens: bool, a: _Acc, nested: bool = True) -> None:
    """One batch of B images (the first v real, the rest padding) through the chain, the fused graph and the
    isolated stages, against the reference's results for it."""
    ch = chain.infer({chain.input_names[0]: x})
    fu = fused.infer({fused.input_names[0]: x})
    ch_ids, fu_ids = _kept(ch, S, nested), _kept(fu, S, nested)
    sl, dst = slice(0, v), slice(s, s + v)
    for key, lg in (("reference", ref["logits"]), ("chain", ch["logits"]), ("fused", fu["logits"])):
        a.put_logits(key, dst, lg[sl])
    a.err["chain_logits"].update(ch["logits"][sl], ref["logits"][sl])
    a.err["fused_logits"].update(fu["logits"][sl], ref["logits"][sl])
    a.err["chain_vs_fused"].update(ch["logits"][sl], fu["logits"][sl])
    for i in range(S - 1):
        a.ids["reference"][i][dst], a.ids["chain"][i][dst], a.ids["fused"][i][dst] = ref_ids[i][sl], ch_ids[i][sl], fu_ids[i][sl]
        a.kept["chain"][i].update(ch_ids[i][sl], ref_ids[i][sl])
        a.kept["fused"][i].update(fu_ids[i][sl], ref_ids[i][sl])
    if not tokens:
        return

    def real(ids: np.ndarray | None) -> np.ndarray | None:
        return None if ids is None else ids[sl]

    # Boundary i: the tokens entering stage i (before pruning point i), compared by original patch position.
    # Their rows follow the kept ids of pruning point i-1 (the patch grid itself for i = 1), each side its own.
    for i in range(1, S):
        name = f"tokens_{i}"
        rows_ref = ref_ids[i - 2] if i >= 2 else None
        rows_ch = ch_ids[i - 2] if i >= 2 else None
        a.bnd_chain[i].update_aligned(ch[name][sl], real(rows_ch), ref[name][sl], real(rows_ref))
        # isolated: stage i fed the reference's tokens; its kept ids and its output against the reference's
        st = chain.stages[i]
        out = st.infer({name: ref[name]})
        iso_ids = compose(rows_ref, out[f"kept_indices_{i}"])
        a.kept["isolated"][i - 1].update(iso_ids[sl], ref_ids[i - 1][sl])
        if i == S - 1:
            a.err["isolated_logits"].update(out["logits"][sl], ref["logits"][sl])
        else:
            nxt = f"tokens_{i + 1}"
            # the stage chose its own kept set from the reference's tokens: aligned as the chain is
            a.bnd_iso[i + 1].update_aligned(out[nxt][sl], iso_ids[sl], ref[nxt][sl], ref_ids[i - 1][sl])
    if S > 1:  # stage 0 always takes the images: as chained
        a.bnd_iso[1].update_aligned(ch["tokens_1"][sl], None, ref["tokens_1"][sl], None)


def _padded(x: np.ndarray, B: int) -> np.ndarray:
    if x.shape[0] % B == 0:
        return x
    pad = B - x.shape[0] % B
    return np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])


def compare(
    chain: StageChain, fused: Runner, reference: Runner, data: ImageSlice, keep_counts: list[int],
    progress: bool = True, nested: bool = True,
) -> Comparison:
    """Run the candidate and the reference over `data` and gather every metric (see the module docstring)."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    S = len(keep_counts) + 1
    needed = ["logits", *(f"kept_indices_{i}" for i in range(1, S))]
    reference.require_outputs(needed, "compare against PyTorch, a recording made by 'dvit reference', or a graph set")
    for cand in (chain, fused):
        cand.require_outputs(needed, "the graphs do not follow the export contract; re-export them")
    tokens = all(f"tokens_{i}" in reference.output_names for i in range(1, S))
    if tokens:
        chain.require_outputs([f"tokens_{i}" for i in range(1, S)], "re-export the graphs")
    n = len(data)
    B = chain.batch or 1
    a = _Acc(n, keep_counts)
    # Chunks do not depend on the candidate's batch size: a reference taking any batch size (PyTorch) then
    # computes exactly what `dvit reference` recorded, which runs on the same chunks.
    chunk = reference.batch * max(1, REF_CHUNK // reference.batch) if reference.batch else REF_CHUNK
    bar = tqdm(total=n, desc="validate", unit="img", file=sys.stderr, disable=None if progress else True)
    for c0 in range(0, n, chunk):
        c1 = min(c0 + chunk, n)
        x = data.normalized(c0, c1)
        ref = _reference_outputs(reference, x)
        ref_ids = _kept(ref, S, nested)
        xp = _padded(x, B)
        refp = {k: _padded(v, B) for k, v in ref.items()}
        idsp = [_padded(v, B) for v in ref_ids]
        for o in range(0, c1 - c0, B):
            _batch(chain, fused, S, c0 + o, min(B, c1 - c0 - o), xp[o : o + B], {k: v[o : o + B] for k, v in refp.items()},
                   [t[o : o + B] for t in idsp], tokens, a, nested)
            bar.update(min(B, c1 - c0 - o))
    bar.close()
    return Comparison(_result(a, data, chain, tokens, S), a.logits, a.ids, nested)


def _reference_outputs(reference: Runner, x: np.ndarray) -> dict[str, np.ndarray]:
    """The reference on the real images of a chunk: in one call when it takes any batch size, else batch by batch."""
    if reference.batch is None:
        return reference.infer({reference.input_names[0]: x})
    return run_batched(reference, {reference.input_names[0]: x})


def _result(a: _Acc, data: ImageSlice, chain: StageChain, tokens: bool, S: int) -> dict[str, Any]:
    labels = data.labels

    def acc(k: str) -> float:
        return float((a.logits[k].argmax(1) == labels).mean())

    def agree(k: str) -> float:
        return float((a.logits[k].argmax(1) == a.logits["reference"].argmax(1)).mean())

    return {
        "reference": {"accuracy": acc("reference")},
        "chain": {
            "accuracy": acc("chain"), "agreement": agree("chain"), "logits": a.err["chain_logits"].to_dict(),
            "boundaries": [
                {"stage": i, "tensor": chain.stages[i].input_names[0], "chained": a.bnd_chain[i].to_dict(),
                 "isolated": a.bnd_iso[i].to_dict()}
                for i in range(1, S)
            ] if tokens else [],
            "isolated_logits": a.err["isolated_logits"].to_dict() if tokens else None,
            "kept": [k.to_dict() for k in a.kept["chain"]],
            "kept_isolated": [k.to_dict() for k in a.kept["isolated"]] if tokens else [],
        },
        "fused": {
            "accuracy": acc("fused"), "agreement": agree("fused"), "logits": a.err["fused_logits"].to_dict(),
            "kept": [k.to_dict() for k in a.kept["fused"]],
        },
        "chain_vs_fused": {
            "logits_max_abs": a.err["chain_vs_fused"].max_abs,
            "agreement": float((a.logits["chain"].argmax(1) == a.logits["fused"].argmax(1)).mean()),
            "kept_identical": [float((a.ids["chain"][i] == a.ids["fused"][i]).all(1).mean()) for i in range(S - 1)],
        },
    }


def batch_consistency(chain1: StageChain, fused1: Runner, data: ImageSlice, m: int, B: int, cmp: Comparison,
                      progress: bool = True) -> dict[str, Any]:
    """Per-sample results of the B=1 graphs on the first m images against the B>1 run's."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    S = len(cmp.ids["chain"]) + 1
    one: dict[str, tuple[list[np.ndarray], list[list[np.ndarray]]]] = {
        k: ([], [[] for _ in range(S - 1)]) for k in ("chain", "fused")
    }
    for j in tqdm(range(m), desc="batch-1 consistency", unit="img", file=sys.stderr, disable=None if progress else True):
        x = data.normalized(j, j + 1)
        for key, runner in (("chain", chain1), ("fused", fused1)):
            out = runner.infer({runner.input_names[0]: x})
            one[key][0].append(out["logits"])
            for i, ids in enumerate(_kept(out, S, cmp.nested)):
                one[key][1][i].append(ids)
    res: dict[str, Any] = {"batch_sizes": [B, 1], "samples": m}
    for key in ("chain", "fused"):
        lg = np.concatenate(one[key][0])
        ref = cmp.logits[key][:m]
        res[key] = {
            "logits_max_abs": float(np.abs(lg - ref).max(initial=0.0)),
            "agreement": float((lg.argmax(1) == ref.argmax(1)).mean()),
            "kept_identical": [float((np.concatenate(one[key][1][i]) == cmp.ids[key][i][:m]).all(1).mean())
                               for i in range(S - 1)],
        }
    return res
