"""`dvit validate`: the exported (or precision-converted) graphs in ONNX Runtime against PyTorch, on real data.

Reads an "export" or "precision" manifest, runs every graph of one batch size B in ONNX Runtime (CPU provider,
or CUDA with --providers cuda) on the TEST split, and the checkpoint named in the manifest (hash-checked) in
PyTorch (DynamicViT.forward_inference, FP32) on the same images. The last partial batch is padded by
repeating its last image; padded rows are never scored.

Conventions
-----------
* stage chain: stage 0 takes the images, stage i >= 1 the tokens stage i-1 produced (ONNX all the way);
  isolated: stage i >= 1 takes PyTorch's tokens at its input instead.
* boundary i: the tensor entering stage graph i (tokens_i), compared with PyTorch's tensor there. Rows of
  token tensors are put in patch-grid order on both sides (class token first) before comparing, so a kept set
  chosen in another order (ties between equal keep scores) is not counted as numeric error; a different kept
  set is (and shows in the kept-token metrics too).
* kept tokens: relative indices are composed through the stages into positions of the original patch grid
  (as forward_inference's kept_patch_ids); per sample IoU = |A n B| / |A u B| of the kept sets.
* accuracy/agreement are fractions in [0, 1]; "agreement" = same top-1 class as PyTorch.

JSON (--json OUT.json), format "dvit-edge/validation/v1":
    {
      "format", "graphs_dir", "manifest": {"kind", "sha256"}, "precision": [per stage] ("fp32"s for export),
      "checkpoint": {"path", "sha256", "matches_manifest"}, "dataset": {"source", "split", "samples"},
      "batch_size", "providers": [...], "threads", "elapsed_s",
      "pytorch": {"accuracy"},
      "chain": {"accuracy", "agreement", "logits": ERR,
                "boundaries": [{"stage", "tensor", "chained": ERR, "isolated": ERR | null}],
                "kept": [{"stage", "keep_count", "iou_mean", "iou_min", "identical", "order_identical"}],
                "kept_isolated": [same as kept]},
      "fused": {"accuracy", "agreement", "logits": ERR, "kept": [...]},
      "chain_vs_fused": {"logits_max_abs", "agreement", "kept_identical": [per pruning point]},
      "batch_consistency": null | {"batch_sizes": [B, 1], "samples", "chain": CONS, "fused": CONS},
      "requirements": {"profile", "enforced", "passed", "checks": [{"name", "value", "op", "threshold", "passed"}]}
    }
    ERR  = {"max_abs", "mean_abs", "cosine_mean", "cosine_min"}  (cosine over the last axis, per row)
    CONS = {"logits_max_abs", "agreement", "kept_identical"}

Thresholds (--require, or the profile the manifest's precision implies, reported but not enforced without it):
    fp32: agreement 100%, logits max abs error < 1e-4, kept sets identical at every pruning point, B>1 vs B=1
          logits max abs diff < 1e-4;
    fp16: agreement >= 99.5%, accuracy within 0.3 points of PyTorch FP32, mean kept IoU >= 0.98;
    int8: accuracy within 1.0 point of PyTorch FP32.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CheckpointError, ConfigError, DvitError, ManifestError
from .io import atomic_write_json, sha256_file
from .manifest import read_manifest

FORMAT = "dvit-edge/validation/v1"
PROFILES = ("fp32", "fp16", "int8")
PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
FP32_LOGITS_TOL = 1e-4


# ---------------------------------------------------------------- metrics
@dataclass
class ErrStats:
    """Running max/mean absolute error and row cosine similarity of two tensors."""

    max_abs: float = 0.0
    sum_abs: float = 0.0
    count: int = 0
    cos_sum: float = 0.0
    cos_min: float = 1.0
    rows: int = 0

    def update(self, got: np.ndarray, ref: np.ndarray) -> None:
        got = np.asarray(got, dtype=np.float64)
        ref = np.asarray(ref, dtype=np.float64)
        if got.shape != ref.shape:
            raise DvitError(f"internal: comparing shapes {got.shape} and {ref.shape}")
        d = np.abs(got - ref)
        self.max_abs = max(self.max_abs, float(d.max(initial=0.0)))
        self.sum_abs += float(d.sum())
        self.count += d.size
        a = got.reshape(-1, got.shape[-1])
        b = ref.reshape(-1, ref.shape[-1])
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        cos = np.where((na > 0) & (nb > 0), (a * b).sum(1) / np.maximum(na * nb, 1e-30), (na == nb).astype(float))
        cos = np.clip(cos, -1.0, 1.0)
        self.cos_sum += float(cos.sum())
        self.cos_min = min(self.cos_min, float(cos.min(initial=1.0)))
        self.rows += cos.size

    def to_dict(self) -> dict[str, float]:
        return {
            "max_abs": self.max_abs,
            "mean_abs": self.sum_abs / max(1, self.count),
            "cosine_mean": self.cos_sum / max(1, self.rows),
            "cosine_min": self.cos_min,
        }


@dataclass
class KeptStats:
    stage: int
    keep_count: int
    ious: list[np.ndarray] = field(default_factory=list)
    order: list[np.ndarray] = field(default_factory=list)

    def update(self, got: np.ndarray, ref: np.ndarray) -> None:
        self.ious.append(kept_iou(got, ref))
        self.order.append((got == ref).all(axis=1))

    def to_dict(self) -> dict[str, Any]:
        iou = np.concatenate(self.ious) if self.ious else np.zeros(0)
        order = np.concatenate(self.order) if self.order else np.zeros(0, bool)
        return {
            "stage": self.stage,
            "keep_count": self.keep_count,
            "iou_mean": float(iou.mean()) if iou.size else None,
            "iou_min": float(iou.min()) if iou.size else None,
            "identical": float((iou == 1.0).mean()) if iou.size else None,
            "order_identical": float(order.mean()) if order.size else None,
        }


def kept_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row IoU of two [n, k] sets of patch ids."""
    inter = (a[:, :, None] == b[:, None, :]).any(-1).sum(-1)
    union = a.shape[1] + b.shape[1] - inter
    return inter / np.maximum(union, 1)


def compose(prev_ids: np.ndarray | None, idx: np.ndarray) -> np.ndarray:
    """Relative kept indices -> original patch ids, given the ids of the stage's input patch tokens."""
    idx = idx.astype(np.int64)
    return idx if prev_ids is None else np.take_along_axis(prev_ids, idx, axis=1)


def grid_order(tokens: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
    """Token rows (class token first) with the patch rows sorted by patch id; unchanged when ids is None."""
    if ids is None:
        return tokens
    order = np.argsort(ids, axis=1, kind="stable")
    patches = np.take_along_axis(tokens[:, 1:], order[:, :, None], axis=1)
    return np.concatenate([tokens[:, :1], patches], axis=1)


# ---------------------------------------------------------------- graphs
@dataclass
class StageGraph:
    session: Any
    input: str
    output: str  # tokens_{i+1} or logits
    kept: str | None  # kept_indices_i for i >= 1


@dataclass
class GraphSet:
    batch: int
    stages: list[StageGraph]
    fused: Any
    fused_input: str
    fused_logits: str
    fused_kept: list[str]

    def run_chain(self, images: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """(logits, per-stage input tensors (boundaries), per-pruning-point relative kept indices)."""
        x = images
        inputs, kept = [], []
        for st in self.stages:
            inputs.append(x)
            names = [st.output] + ([st.kept] if st.kept else [])
            res = st.session.run(names, {st.input: x})
            x = res[0]
            if st.kept:
                kept.append(res[1])
        return x, inputs, kept

    def run_fused(self, images: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        res = self.fused.run([self.fused_logits, *self.fused_kept], {self.fused_input: images})
        return res[0], list(res[1:])


def _session(path: Path, providers: list[str], threads: int | None = None) -> Any:
    import onnxruntime as ort  # type: ignore[import-untyped]

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    try:
        sess = ort.InferenceSession(str(path), sess_options=so, providers=providers)
    except Exception as e:  # ORT raises its own Fail/InvalidGraph/NotImplemented kinds
        raise DvitError(f"ONNX Runtime cannot load {path} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
    if providers[0] != "CPUExecutionProvider" and sess.get_providers()[0] != providers[0]:
        raise DvitError(f"{providers[0]} is not usable here (ONNX Runtime fell back to CPU): pass --providers cpu")
    return sess


def _name(entries: list[dict[str, Any]], prefix: str) -> str | None:
    return next((e["name"] for e in entries if e["name"].startswith(prefix)), None)


def load_graphs(root: Path, graphs: dict[str, Any], providers: list[str], threads: int | None = None) -> GraphSet:
    stages = []
    for e in sorted(graphs["stages"], key=lambda e: e["index"]):
        out = _name(e["outputs"], "tokens_") or _name(e["outputs"], "logits")
        if out is None:
            raise ManifestError(f"{e['file']} has no tokens_*/logits output in the manifest: re-export")
        stages.append(StageGraph(_session(root / e["file"], providers, threads), e["inputs"][0]["name"], out,
                                 _name(e["outputs"], "kept_indices_")))
    f = graphs["fused"]
    kept = sorted((o["name"] for o in f["outputs"] if o["name"].startswith("kept_indices_")),
                  key=lambda n: int(n.rsplit("_", 1)[1]))
    gs = GraphSet(int(f["inputs"][0]["shape"][0]), stages, _session(root / f["file"], providers, threads),
                  f["inputs"][0]["name"], "logits", kept)
    if any(st.kept is None for st in stages[1:]):
        raise ManifestError(f"{root}: a stage graph i >= 1 has no kept_indices_i output in the manifest: re-export")
    return gs


# ---------------------------------------------------------------- reference
def resolve_checkpoint(manifest: dict[str, Any], override: str | None) -> tuple[Path, str, bool]:
    entry = manifest.get("checkpoint") or {}
    if override is not None:
        path = Path(override)
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} not found: pass the .pt file the graphs were exported from")
        sha = sha256_file(path)
        return path, sha, sha == entry.get("sha256")
    if not entry.get("path"):
        raise ManifestError("the manifest names no checkpoint: pass --checkpoint CKPT")
    root = Path(manifest["_root"])
    candidates = [Path(entry["path"]), root / entry["path"]]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise CheckpointError(f"checkpoint {entry['path']} named in the manifest is missing: pass --checkpoint CKPT")
    path = found
    sha = sha256_file(path)
    if sha != entry.get("sha256"):
        raise CheckpointError(
            f"checkpoint {path} does not match the hash in the manifest (changed since export): "
            "re-export, or pass --checkpoint explicitly to compare against it anyway"
        )
    return path, sha, True


def reference(model: Any, images: np.ndarray, device: str) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """PyTorch: (logits, kept patch ids per pruning point, the tensor entering each stage graph)."""
    import torch

    with torch.no_grad():
        out = model.forward_inference(torch.from_numpy(images).to(device))
        to_np = lambda t: t.detach().float().cpu().numpy()
        return to_np(out.logits), [t.cpu().numpy() for t in out.kept_patch_ids], [to_np(t) for t in out.stage_inputs]


REF_CHUNK = 256


class _Accumulators:
    def __init__(self, n: int, classes: int, keep_counts: list[int]) -> None:
        S = len(keep_counts) + 1
        self.logits = {k: np.zeros((n, classes), np.float32) for k in ("pytorch", "chain", "fused")}
        self.ids = {k: [np.zeros((n, kc), np.int64) for kc in keep_counts] for k in ("pytorch", "chain", "fused")}
        self.err = {k: ErrStats() for k in ("chain_logits", "fused_logits", "chain_vs_fused", "isolated_logits")}
        self.bnd_chain = [ErrStats() for _ in range(S)]
        self.bnd_iso = [ErrStats() for _ in range(S)]
        self.kept = {k: [KeptStats(i + 1, kc) for i, kc in enumerate(keep_counts)] for k in ("chain", "fused", "isolated")}


def _validate_batch(
    gs: GraphSet, S: int, s: int, v: int, x: np.ndarray, pt_logits: np.ndarray,
    pt_ids: list[np.ndarray], pre: list[np.ndarray], a: _Accumulators,
) -> None:
    """One batch of B images (the first v real, the rest padding) through the chain, the fused graph and the
    isolated stages, against PyTorch's results for it."""
    ch_logits, ch_inputs, ch_idx = gs.run_chain(x)
    fu_logits, fu_idx = gs.run_fused(x)
    ch_ids: list[np.ndarray] = []  # kept patch ids, composed through the stages
    fu_ids: list[np.ndarray] = []
    for i in range(S - 1):
        ch_ids.append(compose(ch_ids[-1] if ch_ids else None, ch_idx[i]))
        fu_ids.append(compose(fu_ids[-1] if fu_ids else None, fu_idx[i]))
    sl, dst = slice(0, v), slice(s, s + v)
    a.logits["pytorch"][dst], a.logits["chain"][dst], a.logits["fused"][dst] = pt_logits[sl], ch_logits[sl], fu_logits[sl]
    a.err["chain_logits"].update(ch_logits[sl], pt_logits[sl])
    a.err["fused_logits"].update(fu_logits[sl], pt_logits[sl])
    a.err["chain_vs_fused"].update(ch_logits[sl], fu_logits[sl])
    for i in range(S - 1):
        a.ids["pytorch"][i][dst], a.ids["chain"][i][dst], a.ids["fused"][i][dst] = pt_ids[i][sl], ch_ids[i][sl], fu_ids[i][sl]
        a.kept["chain"][i].update(ch_ids[i][sl], pt_ids[i][sl])
        a.kept["fused"][i].update(fu_ids[i][sl], pt_ids[i][sl])
    # Boundary i: the tokens entering stage graph i (before pruning point i), rows in patch-grid order.
    # Their rows follow the kept ids of pruning point i-1 (the patch grid itself for i = 1).
    for i in range(1, S):
        rows_pt = pt_ids[i - 2] if i >= 2 else None
        rows_ch = ch_ids[i - 2] if i >= 2 else None
        a.bnd_chain[i].update(grid_order(ch_inputs[i], rows_ch)[sl], grid_order(pre[i], rows_pt)[sl])
        # isolated: stage i fed PyTorch's tokens; its kept ids and its output against PyTorch's
        st = gs.stages[i]
        out_i, idx_i = st.session.run([st.output, st.kept], {st.input: np.ascontiguousarray(pre[i])})
        iso_ids = compose(rows_pt, idx_i)
        a.kept["isolated"][i - 1].update(iso_ids[sl], pt_ids[i - 1][sl])
        if i == S - 1:
            a.err["isolated_logits"].update(out_i[sl], pt_logits[sl])
        else:
            a.bnd_iso[i + 1].update(grid_order(out_i, iso_ids)[sl], grid_order(pre[i + 1], pt_ids[i - 1])[sl])
    if S > 1:
        a.bnd_iso[1].update(ch_inputs[1][sl], pre[1][sl])  # stage 0 always takes the images: as chained

# ---------------------------------------------------------------- requirements
def profile_for(precisions: list[str]) -> str:
    if "int8" in precisions:
        return "int8"
    if "fp16" in precisions:
        return "fp16"
    return "fp32"


def requirement_checks(result: dict[str, Any], profile: str) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []

    def add(name: str, value: float | None, op: str, threshold: float) -> None:
        ok = value is not None and {
            "<": value < threshold, "<=": value <= threshold, ">=": value >= threshold, "==": value == threshold
        }[op]
        checks.append({"name": name, "value": value, "op": op, "threshold": threshold, "passed": bool(ok)})

    pt = result["pytorch"]["accuracy"]
    for kind in ("chain", "fused"):
        r = result[kind]
        if profile == "fp32":
            add(f"{kind} agreement", r["agreement"], "==", 1.0)
            add(f"{kind} logits max abs error", r["logits"]["max_abs"], "<", FP32_LOGITS_TOL)
            for k in r["kept"]:
                add(f"{kind} kept sets identical (stage {k['stage']})", k["identical"], "==", 1.0)
        elif profile == "fp16":
            add(f"{kind} agreement", r["agreement"], ">=", 0.995)
            add(f"{kind} accuracy drop vs PyTorch FP32 (points)", round(100 * (pt - r["accuracy"]), 6), "<=", 0.3)
            for k in r["kept"]:
                add(f"{kind} mean kept IoU (stage {k['stage']})", k["iou_mean"], ">=", 0.98)
        else:
            add(f"{kind} accuracy drop vs PyTorch FP32 (points)", round(100 * (pt - r["accuracy"]), 6), "<=", 1.0)
    bc = result.get("batch_consistency")
    if profile == "fp32" and bc:
        for kind in ("chain", "fused"):
            add(f"{kind} B={bc['batch_sizes'][0]} vs B=1 logits max abs diff", bc[kind]["logits_max_abs"], "<", FP32_LOGITS_TOL)
    return checks


# ---------------------------------------------------------------- the run
def validate(
    graphs_dir: str | Path,
    *,
    checkpoint: str | None = None,
    batch_size: int | None = None,
    limit: int | None = None,
    providers: str = "cpu",
    data: str | None = None,
    consistency_samples: int = 256,
    require: str | None = None,
    progress: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run the validation (see the module docstring); `threads` caps ONNX Runtime's and PyTorch's CPU threads
    (1 is fastest for small graphs and on a shared machine; None keeps the libraries' defaults)."""
    import torch

    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads} is not positive: pass e.g. --threads 1")
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _validate(graphs_dir, checkpoint, batch_size, limit, providers, data, consistency_samples, require,
                         progress, threads)
    finally:
        torch.set_num_threads(saved)


def _validate(
    graphs_dir: str | Path, checkpoint: str | None, batch_size: int | None, limit: int | None, providers: str,
    data: str | None, consistency_samples: int, require: str | None, progress: bool, threads: int | None,
) -> dict[str, Any]:
    import torch
    from tqdm import tqdm  # type: ignore[import-untyped]

    from .checkpoint import load_model
    from .config import ModelConfig
    from .data import load_dataset

    t0 = time.perf_counter()
    if providers not in PROVIDERS:
        raise ConfigError(f"unknown provider '{providers}': use {' or '.join(PROVIDERS)}")
    if require is not None and require not in (*PROFILES, "auto"):
        raise ConfigError(f"unknown --require '{require}': use {', '.join(PROFILES)} or auto")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit} is not positive: pass the number of test images to use")
    root = Path(graphs_dir)
    manifest = read_manifest(root)
    kind = manifest.get("kind")
    if kind not in ("export", "precision"):
        raise ManifestError(f"{root} holds a '{kind}' manifest: point --graphs at a 'dvit export' or 'dvit precision' output")
    cfg = ModelConfig.from_dict(manifest["model_config"])
    S = len(cfg.pruning_loc) + 1
    precisions = manifest.get("precision") or ["fp32"] * S
    available = sorted((int(b) for b in manifest["graphs"]), reverse=True)
    if batch_size is None:
        batch_size = 8 if 8 in available else available[0]
    if batch_size not in available:
        raise ConfigError(f"no graphs for batch size {batch_size} in {root} (it has {available}): pass --batch-size {available[0]}")

    ckpt_path, ckpt_sha, ckpt_ok = resolve_checkpoint(manifest, checkpoint)
    model = load_model(ckpt_path, expect=cfg)
    device = "cuda" if providers == "cuda" and torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    model = model.to(device).eval()
    ds = load_dataset(data, "test", cfg.in_chans, cfg.img_size)
    n = len(ds) if limit is None else min(limit, len(ds))
    prov = PROVIDERS[providers]
    gs = load_graphs(root, manifest["graphs"][str(batch_size)], prov, threads)
    B = gs.batch

    acc_state = _Accumulators(n, cfg.num_classes, cfg.keep_counts)
    labels = ds.labels[:n].numpy()

    bar = tqdm(total=n, desc="validate", unit="img", file=sys.stderr, disable=None if progress else True)
    chunk = B * max(1, REF_CHUNK // B)  # PyTorch runs on chunks: per-batch calls of a tiny model are overhead
    for c0 in range(0, n, chunk):
        c1 = min(c0 + chunk, n)
        u8 = ds.images[c0:c1]
        if (c1 - c0) % B:
            pad = B - (c1 - c0) % B
            u8 = torch.cat([u8, u8[-1:].expand(pad, *u8.shape[1:])])
        xc = ds.normalize(u8).numpy().astype(np.float32)
        ref_logits, ref_ids, ref_pre = reference(model, xc, device)
        if c0 == 0:
            for i, st in enumerate(gs.stages):
                shape = st.session.get_inputs()[0].shape
                if list(shape[1:]) != list(ref_pre[i].shape[1:]):
                    raise ManifestError(
                        f"stage graph {i} takes {st.input} shaped {shape}, but the tokens before pruning point {i} "
                        f"are {[B, *ref_pre[i].shape[1:]]}: the graphs do not follow the export contract, re-export them"
                    )
        for o in range(0, c1 - c0, B):
            _validate_batch(
                gs, S, c0 + o, min(B, c1 - c0 - o), xc[o : o + B], ref_logits[o : o + B],
                [t[o : o + B] for t in ref_ids], [t[o : o + B] for t in ref_pre], acc_state,
            )
            bar.update(min(B, c1 - c0 - o))
    bar.close()

    def acc(k: str) -> float:
        return float((acc_state.logits[k].argmax(1) == labels).mean())

    def agree(k: str) -> float:
        return float((acc_state.logits[k].argmax(1) == acc_state.logits["pytorch"].argmax(1)).mean())

    tensor_names = [gs.stages[i].input for i in range(S)]
    result: dict[str, Any] = {
        "format": FORMAT,
        "graphs_dir": str(root),
        "manifest": {"kind": kind, "sha256": manifest["_sha256"]},
        "precision": precisions,
        "checkpoint": {"path": str(ckpt_path), "sha256": ckpt_sha, "matches_manifest": ckpt_ok},
        "dataset": {"source": ds.source, "split": "test", "samples": n},
        "batch_size": B,
        "providers": prov,
        "threads": threads,
        "pytorch": {"accuracy": acc("pytorch")},
        "chain": {
            "accuracy": acc("chain"), "agreement": agree("chain"), "logits": acc_state.err["chain_logits"].to_dict(),
            "boundaries": [
                {"stage": i, "tensor": tensor_names[i], "chained": acc_state.bnd_chain[i].to_dict(),
                 "isolated": acc_state.bnd_iso[i].to_dict()}
                for i in range(1, S)
            ],
            "isolated_logits": acc_state.err["isolated_logits"].to_dict(),
            "kept": [k.to_dict() for k in acc_state.kept["chain"]],
            "kept_isolated": [k.to_dict() for k in acc_state.kept["isolated"]],
        },
        "fused": {
            "accuracy": acc("fused"), "agreement": agree("fused"), "logits": acc_state.err["fused_logits"].to_dict(),
            "kept": [k.to_dict() for k in acc_state.kept["fused"]],
        },
        "chain_vs_fused": {
            "logits_max_abs": acc_state.err["chain_vs_fused"].max_abs,
            "agreement": float((acc_state.logits["chain"].argmax(1) == acc_state.logits["fused"].argmax(1)).mean()),
            "kept_identical": [float((acc_state.ids["chain"][i] == acc_state.ids["fused"][i]).all(1).mean()) for i in range(S - 1)],
        },
        "batch_consistency": None,
    }
    if B > 1 and "1" in manifest["graphs"] and consistency_samples > 0:
        result["batch_consistency"] = batch_consistency(
            root, manifest, prov, ds, min(consistency_samples, n), B, acc_state.logits, acc_state.ids, progress, threads
        )
    profile = profile_for(precisions) if require in (None, "auto") else require
    checks = requirement_checks(result, profile)
    result["requirements"] = {
        "profile": profile, "enforced": require is not None,
        "passed": all(c["passed"] for c in checks), "checks": checks,
    }
    result["elapsed_s"] = round(time.perf_counter() - t0, 3)
    return result


def batch_consistency(
    root: Path, manifest: dict[str, Any], prov: list[str], ds: Any, m: int, B: int,
    logits: dict[str, np.ndarray], ids: dict[str, list[np.ndarray]], progress: bool, threads: int | None = None,
) -> dict[str, Any]:
    """Per-sample results of the B=1 graphs on the first m images against the B>1 run's."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    g1 = load_graphs(root, manifest["graphs"]["1"], prov, threads)
    S = len(g1.stages)
    one: dict[str, Any] = {"chain": ([], [[] for _ in range(S - 1)]), "fused": ([], [[] for _ in range(S - 1)])}
    for j in tqdm(range(m), desc="batch-1 consistency", unit="img", file=sys.stderr, disable=None if progress else True):
        x = ds.normalize(ds.images[j : j + 1]).numpy().astype(np.float32)
        cl, _, cidx = g1.run_chain(x)
        fl, fidx = g1.run_fused(x)
        for key, lg, idx in (("chain", cl, cidx), ("fused", fl, fidx)):
            one[key][0].append(lg)
            prev = None
            for i in range(S - 1):
                prev = compose(prev, idx[i])
                one[key][1][i].append(prev)
    out: dict[str, Any] = {"batch_sizes": [B, 1], "samples": m}
    for key in ("chain", "fused"):
        lg = np.concatenate(one[key][0])
        out[key] = {
            "logits_max_abs": float(np.abs(lg - logits[key][:m]).max(initial=0.0)),
            "agreement": float((lg.argmax(1) == logits[key][:m].argmax(1)).mean()),
            "kept_identical": [float((np.concatenate(one[key][1][i]) == ids[key][i][:m]).all(1).mean()) for i in range(S - 1)],
        }
    return out


# ---------------------------------------------------------------- CLI
def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--graphs", required=True, metavar="DIR", help="a 'dvit export' or 'dvit precision' output directory")
    p.add_argument("--checkpoint", default=None, help="PyTorch reference (default: the manifest's, hash-checked)")
    p.add_argument("--batch-size", type=int, default=None, help="which exported batch size to run (default 8, else the largest)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="first N test images only")
    p.add_argument("--json", default=None, metavar="OUT.json", help="write the full results as JSON")
    p.add_argument("--providers", choices=sorted(PROVIDERS), default="cpu", help="ONNX Runtime execution provider")
    p.add_argument("--data", default=None, help="dataset (default: fashion-mnist); its test split is used")
    p.add_argument("--consistency-samples", type=int, default=256, help="images for the B>1 vs B=1 check (default 256)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for ONNX Runtime and PyTorch (default: theirs; 1 is fastest for small graphs)")
    p.add_argument(
        "--require", nargs="?", const="auto", default=None, choices=(*PROFILES, "auto"),
        help="exit 1 unless the thresholds of this profile are met (auto: from the manifest's precision)",
    )


def main(args: argparse.Namespace) -> int:
    from .report import print_validation

    result = validate(
        args.graphs, checkpoint=args.checkpoint, batch_size=args.batch_size, limit=args.limit,
        providers=args.providers, data=args.data, consistency_samples=args.consistency_samples, require=args.require,
        threads=args.threads,
    )
    if args.json:
        atomic_write_json(args.json, result)
    print_validation(result)
    req = result["requirements"]
    if req["enforced"] and not req["passed"]:
        failed = [c["name"] for c in req["checks"] if not c["passed"]]
        print(f"dvit validate: {req['profile']} requirements not met: {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def load_result(path: str | Path) -> dict[str, Any]:
    """Read a validation JSON written by --json (for reports)."""
    obj = json.loads(Path(path).read_text())
    if obj.get("format") != FORMAT:
        raise DvitError(f"{path} is not a dvit validation result: re-run 'dvit validate --json'")
    return obj
