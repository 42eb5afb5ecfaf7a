"""Training that deletes tokens (issue 19): DynamicViT.forward_train_delete, and `dvit train --token-pruning`.

Delete mode must run the blocks after each pruning point on the kept tokens only (shapes seen by the blocks), give
the prediction module a gradient (through the kept tokens' straight-through gate and the keep-ratio loss), keep the
batch one shape (a static keep count per sample), read the Gumbel noise on the patch grid (so that ranks draw alike),
and lay its outputs on the patch grid so the losses need no second code path.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.config import LossWeights, model_config
from pipeline.losses import dynamicvit_loss
from pipeline.model import DynamicViT


def tiny(family: str = "deit") -> DynamicViT:
    name = "fmnist_tiny" if family == "deit" else "lvvit-s"
    cfg = model_config(name)
    if family == "lvvit":
        cfg = cfg.replace(img_size=32, in_chans=1, num_classes=10, embed_dim=48, depth=4, num_heads=2,
                          pruning_loc=(1, 2, 3))
    torch.manual_seed(0)
    return DynamicViT(cfg).train()


def block_input_lengths(model: DynamicViT, images: torch.Tensor, mode: str) -> list[int]:
    seen: list[int] = []
    hooks = [b.register_forward_pre_hook(lambda _m, args: seen.append(int(args[0].shape[1]))) for b in model.blocks]
    try:
        model(images, token_pruning=mode)
    finally:
        for h in hooks:
            h.remove()
    return seen


def test_delete_runs_the_blocks_after_each_pruning_point_on_the_kept_tokens_only() -> None:
    for family in ("deit", "lvvit"):
        model = tiny(family)
        cfg = model.cfg
        x = torch.randn(3, cfg.in_chans, cfg.img_size, cfg.img_size)
        want = [n for (start, end), n in zip(model.stage_bounds(), cfg.tokens_per_stage, strict=True)
                for _ in range(start, end)]
        assert block_input_lengths(model, x, "delete") == want, family
        assert set(block_input_lengths(model, x, "mask")) == {cfg.num_patches + 1}, family


def test_delete_keeps_the_top_tokens_of_the_gumbel_sample_and_lays_outputs_on_the_grid() -> None:
    model = tiny()
    cfg = model.cfg
    B, N = 4, cfg.num_patches
    x = torch.randn(B, 1, 28, 28)
    g = torch.Generator().manual_seed(1)
    noise = [-torch.log(-torch.log(torch.rand(B, N, 2, generator=g).clamp(1e-10, 1.0))) for _ in cfg.pruning_loc]
    out = model(x, noise, token_pruning="delete")
    assert out.tokens.shape == (B, N, cfg.embed_dim) and out.keep_mask.shape == (B, N, 1)
    assert out.keep_mask.sum(dim=(1, 2)).tolist() == [float(cfg.keep_counts[-1])] * B
    # tokens not kept to the end are zero on the grid; kept ones are not
    kept = out.keep_mask[..., 0] > 0.5
    assert bool((out.tokens[~kept] == 0).all()) and bool((out.tokens[kept].abs().sum(-1) > 0).all())
    # the first point's decisions are the hard Gumbel decisions of every patch (all present then)
    lp = model.score_predictor[0](model.run_blocks(model.embed(x), 0, cfg.pruning_loc[0])[:, 1:])
    hard = ((lp + noise[0]).argmax(-1) == 0).float()
    assert torch.equal(out.decisions[0].detach(), hard)
    # the same noise gives the same pass; other noise another
    again = model(x, noise, token_pruning="delete")
    assert torch.equal(again.logits, out.logits) and torch.equal(again.keep_mask, out.keep_mask)
    other = model(x, [n.flip(1) for n in noise], token_pruning="delete")
    assert not torch.equal(other.keep_mask, out.keep_mask)


def test_the_prediction_module_gets_a_gradient_in_delete_mode() -> None:
    model = tiny()
    cfg = model.cfg
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    teacher = DynamicViT(cfg.as_dense()).eval()
    with torch.no_grad():
        t_logits, t_tokens = teacher.forward_teacher(x)
    out = model(x, token_pruning="delete")
    terms = dynamicvit_loss(out, y, t_logits, t_tokens, cfg.stage_ratios, LossWeights())
    # without the keep-ratio term too: the kept tokens' gate alone carries a gradient to the predictor
    (terms.ce + terms.distill_kl + terms.distill_token).backward(retain_graph=True)
    through_tokens = [float(p.grad.abs().sum()) for p in model.score_predictor.parameters() if p.grad is not None]
    assert through_tokens and all(v > 0 for v in through_tokens[-2:]) and sum(through_tokens) > 0
    model.zero_grad()
    terms.total.backward()
    for i, pred in enumerate(model.score_predictor):
        assert sum(float(p.grad.abs().sum()) for p in pred.parameters()) > 0, i


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="'mask' or 'delete'"):
        tiny()(torch.randn(1, 1, 28, 28), token_pruning="drop")


# ---------------------------------------------------------------- dvit train --token-pruning
def _train_cli(tmp_path: Path, name: str, *extra: str, nproc: int = 1, data: Path | None = None) -> Path:
    from test_train import _torchrun

    out = tmp_path / name
    args = ["--mode", "student", "--model", "fmnist_tiny", "--keep-ratio", "0.7", "--epochs", "1", "--batch-size",
            "32", "--max-steps-per-epoch", "3", "--eval-subset", "64", "--no-progress", "--seed", "3", "--threads", "1",
            "--teacher", str(_teacher(tmp_path, 2 if data else 10)), "--out", str(out), *extra]
    if data is not None:
        args += ["--data", str(data), "--loader", "stream", "--workers", "1"]
    else:
        args += ["--train-subset", "256"]
    r = _torchrun(args, nproc)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def _teacher(tmp_path: Path, classes: int) -> Path:
    from pipeline.checkpoint import save_checkpoint

    path = tmp_path / f"teacher{classes}.pt"
    if not path.exists():
        torch.manual_seed(0)
        save_checkpoint(path, DynamicViT(model_config("fmnist_tiny", dense=True, num_classes=classes)))
    return path


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path / "model.pt", map_location="cpu", weights_only=False)["model"]  # type: ignore[no-any-return]


def test_mask_is_the_default_and_bitwise_what_it_was(tmp_path: Path) -> None:
    """--token-pruning mask and no flag: the same weights bit for bit after three steps of the embedded default's
    student (the path the flag adds is not taken in mask mode); delete trains other weights."""
    default, mask = _train_cli(tmp_path, "default"), _train_cli(tmp_path, "mask", "--token-pruning", "mask")
    delete = _train_cli(tmp_path, "delete", "--token-pruning", "delete")
    a, b, c = _state(default), _state(mask), _state(delete)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    saved = torch.load(delete / "model.pt", map_location="cpu", weights_only=False)["train_config"]
    assert saved["token_pruning"] == "delete" and saved["mask_epochs"] == 0


def test_two_processes_on_streamed_data_give_one_process_first_step_loss_in_delete_mode(tmp_path: Path) -> None:
    from train_data import write_image_tree

    photos = tmp_path / "photos"
    write_image_tree(photos, per_class=40, size=28)
    firsts = []
    for n in (1, 2):
        out = _train_cli(tmp_path, f"w{n}", "--token-pruning", "delete", nproc=n, data=photos)
        firsts.append(json.loads((out / "metrics.json").read_text())[0]["first_step"])
    for term in ("total", "ce", "distill_kl", "distill_token", "ratio"):
        assert firsts[1][term] == pytest.approx(firsts[0][term], rel=1e-5, abs=1e-6), term


@pytest.mark.parametrize(("args", "expect"), [
    (["--mask-epochs", "1"], "--mask-epochs 1 sets the masked warm-up of --token-pruning delete"),
    (["--model", "convnext-fmnist", "--token-pruning", "delete"], "keeps every position"),
])
def test_bad_token_pruning_flags_are_one_line(tmp_path: Path, args: list[str], expect: str) -> None:
    import subprocess
    import sys

    base = ["--mode", "student", "--model", "fmnist_tiny", "--epochs", "1", "--out", str(tmp_path / "o")]
    if args[0] == "--model":
        base = base[:2] + base[4:]
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "train", *base, *args], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1], check=False)
    assert r.returncode == 2, r.stderr[-1500:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("dvit train: error:") and expect in last, r.stderr[-1500:]
    assert not (tmp_path / "o").exists()
