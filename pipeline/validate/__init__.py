"""`dvit validate`: a graph set (export, precision or plugin) against a reference, on real data.

The candidate's graphs of one batch size B run in ONNX Runtime (CPU, or CUDA with --providers cuda; plugin
graphs through the DvitTopKGather reference op) as a stage chain and as the fused graph. The reference is one of
  * `pytorch` (default): the checkpoint named in the graph set's manifest (hash-checked; --checkpoint overrides),
    DynamicViT.forward_inference in FP32, on the TEST split;
  * a recording made by `dvit reference` (REF.npz): exactly what PyTorch computed on the workstation, images
    included, so a machine without torch validates against it;
  * another graph set (a directory), e.g. INT8 graphs against their FP32 export.
Metrics, thresholds and the driver are in pipeline.comparison (see its driver's docstring for the conventions).

JSON (--json OUT.json), format "dvit-edge/validation/v2":
    {
      "format", "graphs_dir", "manifest": {"kind", "sha256"}, "precision": [per stage],
      "model": {"config", "keep_counts", "checkpoint": {"path", "sha256"}},
      "reference": {"kind": "pytorch"|"recorded"|"graphs", "name", "accuracy", "matches_manifest", ...provenance},
      "dataset": {"source", "split", "first", "samples"}, "batch_size", "providers", "threads", "elapsed_s",
      "chain": {"accuracy", "agreement", "logits": ERR,
                "boundaries": [{"stage", "tensor", "chained": TOKERR, "isolated": TOKERR}],   ([] without reference tokens)
                "isolated_logits": ERR | null,
                "kept": [{"stage", "keep_count", "iou_mean", "iou_min", "identical", "order_identical"}],
                "kept_isolated": [same as kept]},
      "fused": {"accuracy", "agreement", "logits": ERR, "kept": [...]},
      "chain_vs_fused": {"logits_max_abs", "agreement", "kept_identical": [per pruning point]},
      "batch_consistency": null | {"batch_sizes": [B, 1], "samples", "chain": CONS, "fused": CONS},
      "requirements": {"profile", "enforced", "passed", "checks": [{"name", "value", "op", "threshold", "passed"}]}
    }
    ERR  = {"max_abs", "mean_abs", "cosine_mean", "cosine_min"}  (cosine over the last axis, per row)
    TOKERR = ERR + {"tokens_compared", "tokens_reference", "tokens_per_image", "tokens_fraction"}: the error over
           the tokens both sides kept, paired by original patch position (class token to class token);
           tokens_compared/tokens_reference: tokens compared/the reference's tokens, class tokens included,
           summed over the images; tokens_per_image = tokens_compared / images; tokens_fraction = their ratio
    CONS = {"logits_max_abs", "agreement", "kept_identical"}
Thresholds: pipeline.comparison.thresholds (--require; without it the profile the precision implies is reported,
not enforced).

Imports neither torch nor ModelOpt unless the reference is PyTorch: a device validates against a recording.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import cli_args
from ..backend import GraphRunners, graph_runners
from ..backend.onnxruntime.runner import PROVIDERS
from ..comparison import thresholds
from ..comparison.driver import batch_consistency, compare
from ..errors import CheckpointError, ConfigError, DvitError, ManifestError
from ..graphset import GraphSet
from ..image_slice import ImageSlice, data_spec
from ..io import sha256_file
from ..results.validation import FORMAT, ValidationResult
from ..runners.base import Runner

CANDIDATE_KINDS = ("export", "precision", "plugin", "engine")
GRAPH_KINDS = ("export", "precision", "plugin")  # what ONNX Runtime runs; engines need TensorRT and a GPU


@dataclass
class Reference:
    runner: Runner  # a context manager: closing it releases what the reference holds
    data: ImageSlice
    info: dict[str, Any]


def resolve_checkpoint(gs: GraphSet, override: str | None) -> tuple[Path, str, bool]:
    """The checkpoint to compare against: the manifest's (hash-checked) or an explicit one (flagged if it differs)."""
    entry = gs.checkpoint
    if override is not None:
        path = Path(override)
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} not found: pass the .pt file the graphs were exported from")
        sha = sha256_file(path)
        return path, sha, sha == entry.get("sha256")
    if not entry.get("path"):
        raise ManifestError("the manifest names no checkpoint: pass --checkpoint CKPT")
    found = next((p for p in (Path(entry["path"]), gs.root / entry["path"]) if p.is_file()), None)
    if found is None:
        raise CheckpointError(f"checkpoint {entry['path']} named in the manifest is missing: pass --checkpoint CKPT")
    sha = sha256_file(found)
    if sha != entry.get("sha256"):
        raise CheckpointError(
            f"checkpoint {found} does not match the hash in the manifest (changed since export): "
            "re-export, or pass --checkpoint explicitly to compare against it anyway"
        )
    return found, sha, True


def pytorch_reference(gs: GraphSet, checkpoint: str | None, data: str | None, limit: int | None,
                      providers: str) -> Reference:
    """The PyTorch reference (needs torch): the model's inference path on the dataset's test split."""
    import torch

    from ..checkpoint import load_model
    from ..data import load_dataset
    from ..image_slice import from_image_set
    from ..runners.pytorch import PyTorchRunner

    path, sha, ok = resolve_checkpoint(gs, checkpoint)
    model = load_model(path, expect=gs.config)
    device = "cuda" if providers == "cuda" and torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    ds = load_dataset(data, "test", gs.config.in_chans, gs.config.img_size)
    info = {"kind": "pytorch", "name": "PyTorch FP32", "checkpoint": {"path": str(path), "sha256": sha},
            "matches_manifest": ok}
    return Reference(PyTorchRunner(model, device=device), from_image_set(ds, "test", limit, data), info)


def recorded_reference(gs: GraphSet, path: str, data: str | None, limit: int | None) -> Reference:
    """A recording made by `dvit reference`, refused when it was made from another model or dataset slice."""
    from ..results.reference import load_recording
    from ..runners.recorded import RecordedRunner

    rec = load_recording(path)
    model = rec.meta.get("model") or {}
    fix = f"record one for these graphs with 'dvit reference --graphs {gs.root} --out REF.npz'"
    if model.get("config") != gs.config.to_dict():
        raise DvitError(f"{rec.path.name} was recorded from another model configuration than {gs.root}'s: {fix}")
    want = gs.checkpoint.get("sha256")
    if want and rec.checkpoint_sha256 != want:
        raise DvitError(
            f"{rec.path.name} was recorded from checkpoint {str(rec.checkpoint_sha256)[:12]}, but {gs.root} was exported "
            f"from {want[:12]}: {fix}"
        )
    if data is not None and data_spec(data) != rec.data.spec:
        raise DvitError(f"{rec.path.name} holds images of {rec.data.spec}, not {data}: drop --data, or {fix} --data {data}")
    if limit is not None and limit > len(rec.data):
        raise DvitError(f"{rec.path.name} holds {len(rec.data)} images, fewer than --limit {limit}: pass --limit "
                        f"{len(rec.data)} or record more with 'dvit reference --limit {limit}'")
    info = {"kind": "recorded", "name": f"recorded PyTorch ({rec.path.name})", "recording": {
        "path": str(rec.path), "npz_sha256": rec.meta["npz"]["sha256"], "checkpoint_sha256": rec.checkpoint_sha256},
        "matches_manifest": True}
    return Reference(RecordedRunner(rec), rec.data.head(limit if limit is not None else len(rec.data)), info)


def graphs_reference(gs: GraphSet, ref_dir: str, data: str | None, limit: int | None, providers: str,
                     threads: int | None, pool: str | None = None) -> Reference:
    """Another graph set's stage chain as the reference (e.g. INT8 graphs against their FP32 export)."""
    from ..data import load_dataset
    from ..image_slice import from_image_set

    ref = GraphSet.load(ref_dir, GRAPH_KINDS)
    if ref.config.to_dict() != gs.config.to_dict():
        raise DvitError(f"{ref.root} holds graphs of another model configuration than {gs.root}: compare graph sets of one model")
    runners = graph_runners(ref, max(ref.batch_sizes), providers=providers, threads=threads, pool=pool)
    chain = runners.chain
    chain.name = f"{ref.kind} graphs {ref.root.name}"
    runners.fused.close()  # only the chain is the reference
    ds = load_dataset(data, "test", gs.config.in_chans, gs.config.img_size)
    info = {"kind": "graphs", "name": f"{ref.kind} {','.join(ref.precision)} ({ref.root.name})",
            "graphs": {"dir": str(ref.root), "kind": ref.kind, "sha256": ref.sha256, "precision": ref.precision},
            "matches_manifest": ref.checkpoint.get("sha256") == gs.checkpoint.get("sha256")}
    return Reference(chain, from_image_set(ds, "test", limit, data), info)


def reference_kind(spec: str) -> str:
    if spec == "pytorch":
        return "pytorch"
    p = Path(spec)
    if p.is_dir():
        return "graphs"
    if p.suffix in (".npz", ".json") or p.with_suffix(".json").is_file():
        return "recorded"
    raise ConfigError(f"--reference {spec} is neither 'pytorch', a recording (REF.npz) nor a graph-set directory")


def validate(
    graphs_dir: str | Path,
    *,
    reference: str = "pytorch",
    checkpoint: str | None = None,
    batch_size: int | None = None,
    limit: int | None = None,
    providers: str = "cpu",
    data: str | None = None,
    consistency_samples: int = 256,
    require: str | None = None,
    progress: bool = True,
    threads: int | None = None,
    pool: str | None = None,
    plugin_lib: str | None = None,
) -> dict[str, Any]:
    """Run the validation; `threads` caps ONNX Runtime's (and PyTorch's) CPU threads (1 is fastest for small
    graphs and on a shared machine; None keeps the libraries' defaults); `pool` is ONNX Runtime's thread pool
    (backend.onnxruntime.pools; None: its default); `plugin_lib` overrides an engine set's plugin library."""
    t0 = time.perf_counter()
    if providers not in PROVIDERS:
        raise ConfigError(f"unknown provider '{providers}': use {' or '.join(PROVIDERS)}")
    if require is not None and require not in (*thresholds.PROFILES, "auto"):
        raise ConfigError(f"unknown --require '{require}': use {', '.join(thresholds.PROFILES)} or auto")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit} is not positive: pass the number of test images to use")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads} is not positive: pass e.g. --threads 1")
    kind = reference_kind(reference)
    gs = GraphSet.load(graphs_dir, CANDIDATE_KINDS)
    graphs = gs.batch(batch_size)
    opts = _Options(providers, threads, pool, plugin_lib)
    if kind == "pytorch":
        with _torch_threads(threads):
            return _run(gs, graphs, pytorch_reference(gs, checkpoint, data, limit, providers), opts,
                        consistency_samples, require, progress, t0)
    ref = (recorded_reference(gs, reference, data, limit) if kind == "recorded"
           else graphs_reference(gs, reference, data, limit, providers, threads, pool))
    return _run(gs, graphs, ref, opts, consistency_samples, require, progress, t0)


@dataclass(frozen=True)
class _Options:
    """How the candidate runs: passed to the runner factory."""

    providers: str
    threads: int | None
    pool: str | None
    plugin_lib: str | None

    def runners(self, gs: GraphSet, batch: int) -> GraphRunners:
        """The candidate's runners: ONNX Runtime for graphs, TensorRT for an engine set (a GPU is needed). Engines
        validate as a chain of single-engine runners, so that each stage can also run on the reference's tokens
        (the isolated metrics); `dvit latency` times the device-resident chain."""
        return graph_runners(gs, batch, providers=self.providers, threads=self.threads, pool=self.pool,
                             plugin_lib=self.plugin_lib)


class _torch_threads:
    """PyTorch's intra-op threads set for the duration (restored after)."""

    def __init__(self, threads: int | None) -> None:
        self.threads = threads

    def __enter__(self) -> None:
        import torch

        self.saved = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.set_num_threads(self.saved)


def _run(gs: GraphSet, graphs: Any, ref: Reference, opts: _Options, consistency_samples: int, require: str | None,
         progress: bool, t0: float) -> dict[str, Any]:
    with ref.runner:
        return _compare(gs, graphs, ref, opts, consistency_samples, require, progress, t0)


def _compare(gs: GraphSet, graphs: Any, ref: Reference, opts: _Options, consistency_samples: int,
             require: str | None, progress: bool, t0: float) -> dict[str, Any]:
    cfg = gs.config
    if ref.data.images.shape[1:] != (cfg.in_chans, cfg.img_size, cfg.img_size):
        raise DvitError(
            f"{ref.data.source} has {'x'.join(map(str, ref.data.images.shape[1:]))} images but the model takes "
            f"{cfg.in_chans}x{cfg.img_size}x{cfg.img_size}: pass matching --data"
        )
    with opts.runners(gs, graphs.batch) as runners:
        cmp = compare(runners.stage_chain, runners.fused, ref.runner, ref.data, cfg.keep_counts, progress,
                      cfg.nested_selection)
        ran_on = getattr(runners.fused, "providers", [runners.fused.name])
    result: dict[str, Any] = {
        "format": FORMAT,
        "graphs_dir": str(gs.root),
        "manifest": {"kind": gs.kind, "sha256": gs.sha256},
        "precision": gs.precision,
        "model": {"config": cfg.to_dict(), "keep_counts": cfg.keep_counts, "checkpoint": gs.checkpoint},
        "dataset": ref.data.describe(),
        "batch_size": graphs.batch,
        "providers": ran_on,
        "threads": opts.threads,
        **cmp.result,
        "batch_consistency": None,
    }
    result["reference"] = {**ref.info, **cmp.result["reference"]}
    if graphs.batch > 1 and 1 in gs.batches and consistency_samples > 0:
        with opts.runners(gs, 1) as one:
            result["batch_consistency"] = batch_consistency(
                one.stage_chain, one.fused, ref.data, min(consistency_samples, len(ref.data)), graphs.batch, cmp, progress)
    profile = thresholds.profile_for(gs.precision) if require in (None, "auto") else require
    result["requirements"] = thresholds.requirements(result, profile, require is not None)
    result["elapsed_s"] = round(time.perf_counter() - t0, 3)
    return result


# ---------------------------------------------------------------- CLI
def configure(p: argparse.ArgumentParser) -> None:
    cli_args.add_graphs(p, help="a graph set: the output of 'dvit export', 'dvit precision' or 'dvit plugin-pass' "
                                "(ONNX Runtime), or of 'dvit build' (TensorRT engines, on a GPU)")
    p.add_argument("--reference", default="pytorch", metavar="pytorch|REF.npz|DIR",
                   help="what to compare against: PyTorch (default), a recording made by 'dvit reference' "
                   "(no torch needed), or another graph set")
    p.add_argument("--checkpoint", default=None, help="PyTorch reference (default: the manifest's, hash-checked)")
    p.add_argument("--batch-size", type=int, default=None, help="which batch size's graphs to run (default 8, else the largest)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="first N test images only")
    p.add_argument("--json", default=None, metavar="OUT.json", help="write the full results as JSON")
    p.add_argument("--providers", choices=sorted(PROVIDERS), default="cpu", help="ONNX Runtime execution provider")
    p.add_argument("--data", default=None, help="dataset (default: fashion-mnist); its test split is used")
    p.add_argument("--consistency-samples", type=int, default=256, help="images for the B>1 vs B=1 check (default 256)")
    cli_args.add_threads(p, help="CPU threads for ONNX Runtime and PyTorch (default: theirs; 1 is fastest for small "
                                 "graphs)")
    cli_args.add_pool(p)
    cli_args.add_plugin_lib(p, help="engine sets: the DvitTopKGather plugin library (default: the engine set's)")
    p.add_argument(
        "--require", nargs="?", const="auto", default=None, choices=(*thresholds.PROFILES, "auto"),
        help="exit 1 unless the thresholds of this profile are met (auto: from the graphs' precision)",
    )
    cli_args.add_progress(p)


def main(args: argparse.Namespace) -> int:
    from .tables import print_validation

    result = validate(
        args.graphs, reference=args.reference, checkpoint=args.checkpoint, batch_size=args.batch_size,
        limit=args.limit, providers=args.providers, data=args.data, consistency_samples=args.consistency_samples,
        require=args.require, threads=args.threads, pool=args.pool, plugin_lib=args.plugin_lib,
        progress=not args.no_progress,
    )
    if args.json:
        ValidationResult(result).save(args.json)
    print_validation(result)
    req = result["requirements"]
    if req["enforced"] and not req["passed"]:
        failed = [c["name"] for c in req["checks"] if not c["passed"]]
        print(f"dvit validate: {req['profile']} requirements not met: {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def load_result(path: str | Path) -> dict[str, Any]:
    """Read a validation JSON written by --json (pipeline.results.validation checks its format and sections)."""
    return ValidationResult.load(path).data
