"""`dvit reference`: record what PyTorch computes on a dataset slice, for validation where torch is absent.

The model's inference path runs on the first N images of the TEST split, in the same chunks `dvit validate`
uses, and REF.npz + REF.json (see results/reference.py) keep the images, the labels and every output by the graphs'
tensor names: logits, kept_indices_i and (unless --no-tokens) tokens_i, the tensors entering each stage graph.
`dvit validate --reference REF.npz` then gives the same figures as `--reference pytorch`, on any machine.

Size: tokens dominate (for the embedded default, 10,000 images take about 320 MB with tokens, 8 MB without;
without tokens validation leaves out the stage-boundary and isolated-stage metrics).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .comparison.driver import REF_CHUNK
from .errors import ConfigError, DvitError
from .io import sha256_file


def record(
    out: str | Path,
    *,
    graphs: str | None = None,
    checkpoint: str | None = None,
    model: str | None = None,
    keep_ratio: float | None = None,
    limit: int | None = None,
    data: str | None = None,
    tokens: bool = True,
    threads: int | None = None,
    progress: bool = True,
) -> Path:
    """Record the PyTorch reference; returns REF.json's path. The model is --graphs' checkpoint (hash-checked)
    or --checkpoint (ours, official DynamicViT or timm/DeiT with --model)."""
    import torch
    from tqdm import tqdm  # type: ignore[import-untyped]

    from .checkpoint import load_model
    from .data import load_dataset
    from .graphset import GraphSet
    from .image_slice import from_image_set
    from .results.reference import save_recording
    from .runners.pytorch import PyTorchRunner

    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit} is not positive: pass the number of test images to record")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads} is not positive: pass e.g. --threads 1")
    if (graphs is None) == (checkpoint is None):
        raise ConfigError("name the model once: --graphs DIR (its manifest's checkpoint) or --checkpoint CKPT")
    if graphs is not None:
        gs = GraphSet.load(graphs, ("export", "precision", "plugin"))
        entry = gs.checkpoint
        path = Path(entry.get("path") or "")
        if not path.is_file():
            raise DvitError(f"checkpoint {path} named in {gs.root}'s manifest is missing: pass --checkpoint CKPT")
        if sha256_file(path) != entry.get("sha256"):
            raise DvitError(f"checkpoint {path} changed since {gs.root} was exported: re-export, or pass --checkpoint")
        net = load_model(path, expect=gs.config)
    else:
        assert checkpoint is not None
        path = Path(checkpoint)
        net = load_model(path, preset=model, keep_ratio=keep_ratio)
    cfg = net.cfg
    ds = load_dataset(data, "test", cfg.in_chans, cfg.img_size)
    sl = from_image_set(ds, "test", limit, data)
    runner = PyTorchRunner(net)
    keep = [n for n in runner.output_names if tokens or not n.startswith(f"{cfg.boundary}_")]
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    parts: dict[str, list[np.ndarray]] = {n: [] for n in keep}
    try:
        with tqdm(total=len(sl), desc="reference", unit="img", file=sys.stderr, disable=None if progress else True) as bar:
            for c0 in range(0, len(sl), REF_CHUNK):  # the chunks `dvit validate` runs PyTorch on
                c1 = min(c0 + REF_CHUNK, len(sl))
                res = runner.infer({"images": sl.normalized(c0, c1)})
                for n in keep:
                    parts[n].append(res[n])
                bar.update(c1 - c0)
    finally:
        torch.set_num_threads(saved)
    outputs = {n: np.concatenate(v) for n, v in parts.items()}
    model_info: dict[str, Any] = {"config": cfg.to_dict(), "checkpoint": str(path.resolve()),
                                  "checkpoint_sha256": sha256_file(path)}
    return save_recording(out, sl, outputs, model_info, {"torch": torch.__version__, "threads": threads,
                                                         "chunk": REF_CHUNK, "tokens": tokens})


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--graphs", default=None, metavar="DIR", help="record the checkpoint this graph set was exported from")
    p.add_argument("--checkpoint", default=None, help="or a checkpoint: ours, official DynamicViT, or timm/DeiT")
    p.add_argument("--model", default=None, help="architecture preset for a checkpoint that does not name it, "
                   "e.g. deit_small_patch16_224")
    p.add_argument("--keep-ratio", type=float, default=None, help="keep ratio (default: the checkpoint's, else the preset's)")
    p.add_argument("--out", required=True, metavar="REF.npz", help="the recording (REF.npz and REF.json beside it)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="first N test images only (default: all)")
    p.add_argument("--data", default=None, help="dataset (default: fashion-mnist); its test split is used")
    p.add_argument("--no-tokens", action="store_true",
                   help="leave out the stage-boundary tokens (much smaller; validation then skips boundary metrics)")
    p.add_argument("--threads", type=int, default=None, help="PyTorch CPU threads (use what 'dvit validate' uses)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    meta = record(args.out, graphs=args.graphs, checkpoint=args.checkpoint, model=args.model,
                  keep_ratio=args.keep_ratio, limit=args.limit, data=args.data, tokens=not args.no_tokens,
                  threads=args.threads, progress=not args.no_progress)
    npz = meta.with_suffix(".npz")
    print(f"recorded the PyTorch reference to {npz} ({npz.stat().st_size / 2**20:.1f} MiB) and {meta.name}")
    return 0
