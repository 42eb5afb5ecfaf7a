"""Stage-boundary token error where the candidate kept another token set than the reference.

Two tiny models exported for real: the reference, whose attention mixes nothing between tokens (every block's
attention projection has a zero weight, its bias kept, so each token's value depends on that token alone), and
the candidate, the same model with its first prediction module's keep/drop logits swapped: it keeps the patches
the reference ranks lowest. Every token both kept then has exactly the reference's value, and the class token
(hence the logits) is the reference's, so a comparison by original patch position finds no error over the tokens
both kept; a comparison row by row pairs different patches.
"""
from __future__ import annotations

import copy
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from tiny_models import TINY, trained_like

from pipeline import validate
from pipeline.comparison import metrics
from pipeline.model import DynamicViT
from pipeline.validate.tables import validation_tables

LIMIT = 24  # 6 batches of 4
N = TINY.num_patches  # 49
K = TINY.keep_counts  # [34, 24, 16]


def test_aligned_rows_pair_tokens_by_patch_position() -> None:
    rng = np.random.default_rng(0)
    value = rng.normal(size=(12, 8))  # the token of patch p is value[p]; the class token is value[11]

    def tokens(ids: list[list[int]]) -> np.ndarray:
        return np.stack([np.concatenate([value[11:], value[row]]) for row in ids])

    ref_ids = np.array([[5, 1, 9, 3], [0, 1, 2, 3]])
    got_ids = np.array([[9, 2, 5, 7], [3, 2, 1, 0]])  # shares {5, 9}; the same set in another order
    got, ref = tokens(got_ids.tolist()), tokens(ref_ids.tolist())
    g, r, n = metrics.aligned_rows(got, got_ids, ref, ref_ids)
    assert n.tolist() == [3, 5]  # the class token and the patches both kept
    assert np.array_equal(g, r) and g.shape == (8, 8)
    assert np.array_equal(r[:2], value[[11, 11]])  # class tokens first, then patches in patch-id order
    assert np.array_equal(r[2:4], value[[5, 9]]) and np.array_equal(r[4:], value[[0, 1, 2, 3]])
    # no ids: the rows are the patch grid itself
    full = tokens([list(range(11))])
    g, r, n = metrics.aligned_rows(full, None, tokens([[4, 7]]), np.array([[4, 7]]))
    assert n.tolist() == [3] and np.array_equal(g, r)

    e = metrics.TokenErrStats()
    e.update_aligned(got, got_ids, ref, ref_ids)
    d = e.to_dict()
    assert d["max_abs"] == 0.0 and d["cosine_min"] == pytest.approx(1.0)
    assert d["tokens_compared"] == 8 and d["tokens_reference"] == 10
    assert d["tokens_per_image"] == 4.0 and d["tokens_fraction"] == 0.8
    # row by row (what the boundary comparison did) the first image pairs different patches
    rowwise = metrics.ErrStats()
    rowwise.update(got, ref)
    assert rowwise.to_dict()["cosine_min"] < 0.9


def _export(model: DynamicViT, root: Path) -> Path:
    from pipeline.checkpoint import save_checkpoint
    from pipeline.export import export

    root.mkdir(parents=True)
    save_checkpoint(root / "student.pt", model)
    export(root / "student.pt", root / "export", batch_sizes=(4,), verify_images=4, progress=False)
    return root / "export"


@pytest.fixture(scope="module")
def other_kept_set(tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.manual_seed(0)
    ref = DynamicViT(TINY)
    with torch.no_grad():
        for blk in ref.blocks:
            blk.attn.proj.weight.zero_()
    ref = trained_like(ref)
    cand = copy.deepcopy(ref)
    with torch.no_grad():
        last = cand.score_predictor[0].out_conv[4]
        last.weight.neg_()
        last.bias.neg_()  # keep - drop margin negated: the lowest-ranked patches are kept
    root = tmp_path_factory.mktemp("align")
    return {"reference": _export(ref, root / "reference"), "candidate": _export(cand, root / "candidate")}


def test_boundary_error_compares_tokens_both_kept(other_kept_set: dict) -> None:
    r = validate.validate(other_kept_set["candidate"], reference=str(other_kept_set["reference"]), limit=LIMIT,
                          consistency_samples=0, progress=False, threads=1)
    ch = r["chain"]
    # the candidate keeps the bottom 34 of 49 patches where the reference keeps the top 34: 19 in common
    shared = K[0] - (N - K[0])
    assert ch["kept"][0]["iou_mean"] == pytest.approx(shared / N)
    # and computes what the reference computes: the class token never sees another token
    assert ch["agreement"] == 1.0 and ch["accuracy"] == r["reference"]["accuracy"] and ch["logits"]["max_abs"] < 1e-4
    b = {x["stage"]: x for x in ch["boundaries"]}
    assert sorted(b) == [1, 2, 3]
    for x in b.values():
        for side in ("chained", "isolated"):
            assert x[side]["cosine_min"] > 0.99999 and x[side]["max_abs"] < 1e-4, (x["stage"], side, x[side])
    # how many tokens each comparison covered (the class token included)
    for side in ("chained", "isolated"):
        assert b[1][side]["tokens_compared"] == LIMIT * (N + 1) and b[1][side]["tokens_fraction"] == 1.0
        c = b[2][side]
        assert c["tokens_compared"] == LIMIT * (shared + 1) and c["tokens_reference"] == LIMIT * (K[0] + 1)
        assert c["tokens_per_image"] == shared + 1 and c["tokens_fraction"] == pytest.approx((shared + 1) / (K[0] + 1))
    # chained, the candidate's later pruning points choose among other tokens; isolated, stage 2 takes the
    # reference's tokens and its unchanged prediction module keeps the reference's set
    assert LIMIT <= b[3]["chained"]["tokens_compared"] < LIMIT * (K[1] + 1)
    assert b[3]["isolated"]["tokens_compared"] == LIMIT * (K[1] + 1) and b[3]["isolated"]["tokens_fraction"] == 1.0
    assert ch["kept_isolated"][1]["identical"] == 1.0
    # the table shows how many tokens were compared: per image, and the share of the reference's
    console = Console(width=150, record=True, file=io.StringIO())
    for t in validation_tables(r):
        console.print(t)
    row = next(line for line in console.export_text().splitlines() if "tokens_2" in line)
    assert row.count(f"{shared + 1:.1f} ({100 * (shared + 1) / (K[0] + 1):.0f}%)") == 2 and "1.000000/1.000000" in row
