"""tools/parity_official.py, the cheap parts only (the official DynamicViT checkout is not available here): the help
text, the one-line error for a directory that is not a checkout, and the tool's own batch_index_select, the
function the official models import from `utils`."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from script_module import load_script

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "parity_official.py"

parity = load_script("tools/parity_official.py")


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOOL), *args], check=False, capture_output=True, text=True,
                          timeout=120)


def test_help_names_the_flags():
    r = run_tool("--help")
    assert r.returncode == 0, r.stderr
    for flag in ("--official", "--models", "--images", "--real-images", "--keep-ratio", "--seed", "--reduced",
                 "--json"):
        assert flag in r.stdout
    assert "deit-256,deit-s,deit-b,lvvit-s,lvvit-m" in r.stdout


def test_not_a_checkout_is_one_line_with_the_fix(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "dyvit.py").write_text("# only half a checkout\n")
    r = run_tool("--official", str(tmp_path), "--reduced")
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "models/dylvvit.py" in lines[0] and "models/dyvit.py" not in lines[0].split("(no ")[1].split(")")[0]
    assert "git --git-dir=" in lines[0] and "archive HEAD" in lines[0] and "--official" in lines[0]


def test_unknown_model_name_is_a_usage_error(tmp_path):
    r = run_tool("--official", str(tmp_path), "--models", "deit-s,vit-h")
    assert r.returncode == 2
    assert "vit-h" in r.stderr and "lvvit-m" in r.stderr


def test_batch_index_select_3d_by_hand():
    # x[b, n, c] = 100 b + 10 n + c: every picked row says where it came from
    x = torch.tensor([[[0.0, 1.0], [10.0, 11.0], [20.0, 21.0], [30.0, 31.0]],
                      [[100.0, 101.0], [110.0, 111.0], [120.0, 121.0], [130.0, 131.0]]])
    idx = torch.tensor([[3, 0, 2], [1, 1, 3]])
    want = torch.tensor([[[30.0, 31.0], [0.0, 1.0], [20.0, 21.0]],
                         [[110.0, 111.0], [110.0, 111.0], [130.0, 131.0]]])
    assert torch.equal(parity.batch_index_select(x, idx), want)


def test_batch_index_select_2d_by_hand():
    x = torch.tensor([[5.0, 6.0, 7.0, 8.0], [9.0, 10.0, 11.0, 12.0]])
    idx = torch.tensor([[2, 0], [3, 1]])
    assert torch.equal(parity.batch_index_select(x, idx), torch.tensor([[7.0, 5.0], [12.0, 10.0]]))


def test_batch_index_select_keeps_the_official_policy_layout():
    # The official inference selects [class token, keep_policy + 1] from the tokens and keep_policy from the
    # [B, N, 1] decision; both through this function.
    B, N, C = 2, 5, 3
    tokens = torch.arange(B * (N + 1) * C, dtype=torch.float32).view(B, N + 1, C)
    keep = torch.tensor([[4, 1], [0, 2]])
    now = torch.cat([torch.zeros(B, 1, dtype=torch.long), keep + 1], dim=1)
    out = parity.batch_index_select(tokens, now)
    assert out.shape == (B, 3, C)
    assert torch.equal(out[:, 0], tokens[:, 0])
    assert torch.equal(out[1, 2], tokens[1, 3])
    decision = torch.ones(B, N, 1)
    assert parity.batch_index_select(decision, keep).shape == (B, 2, 1)


def test_batch_index_select_refuses_other_ranks():
    with pytest.raises(ValueError):
        parity.batch_index_select(torch.zeros(2, 3, 4, 5), torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError):
        parity.batch_index_select(torch.zeros(2, 3), torch.zeros(3, 1, dtype=torch.long))


def test_utils_shim_records_and_selects():
    mod = parity.make_utils_module()
    x = torch.tensor([[1.0, 2.0, 3.0]])
    idx = torch.tensor([[2, 0]])
    with parity.RECORDER.recording() as calls:
        out = mod.batch_index_select(x, idx)
    assert torch.equal(out, torch.tensor([[3.0, 1.0]]))
    assert len(calls) == 1 and calls[0][0] == (1, 3) and torch.equal(calls[0][1], idx)
    assert parity.RECORDER.calls is None  # recording stops with the block


@pytest.mark.parametrize(("model", "present", "missing"), [
    ("convnext-t", ("dyvit.py", "dylvvit.py"), "dyconvnext.py"),
    ("swin-t", ("dyvit.py", "dylvvit.py", "dyconvnext.py"), "dyswin.py"),
])
def test_spatial_names_need_their_official_file_in_one_line(tmp_path, model, present, missing):
    (tmp_path / "models").mkdir()
    for f in present:
        (tmp_path / "models" / f).write_text("# stub\n")
    r = run_tool("--official", str(tmp_path), "--models", model)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"models/{missing}" in lines[0] and "--models" in lines[0], r.stderr


def test_batch_index_fill_by_hand():
    x = torch.zeros(1, 4, 2)
    x1 = torch.tensor([[[1.0, 1.0], [2.0, 2.0]]])
    x2 = torch.tensor([[[3.0, 3.0], [4.0, 4.0]]])
    out = parity.batch_index_fill(x, x1, x2, torch.tensor([[2, 0]]), torch.tensor([[3, 1]]))
    assert out.tolist() == [[[2.0, 2.0], [4.0, 4.0], [1.0, 1.0], [3.0, 3.0]]]


def test_official_swin_eval_never_gets_a_batch_of_two():
    # models/dyswin.py's BasicLayer.forward reads an eval batch of 2 as the training pair [x1, x2]
    assert parity.official_eval_batches(2) == [1, 1]
    for n in (1, 3, 12):
        assert parity.official_eval_batches(n) == [n]


def test_gumbel_recorder_is_torchs_gumbel_softmax_and_records_its_draw():
    F = torch.nn.functional
    logits = torch.randn(3, 5, 2, generator=torch.Generator().manual_seed(1)).log_softmax(-1)
    torch.manual_seed(7)
    want = F.gumbel_softmax(logits, hard=True, dim=2)
    after = torch.get_rng_state()
    rec = parity.GumbelRecorder()
    torch.manual_seed(7)
    got = rec.gumbel_softmax(logits, hard=True, dim=2)
    assert torch.equal(got, want)
    assert torch.equal(torch.get_rng_state(), after)  # the replay leaves the generator where torch left it
    assert len(rec.noise) == 1 and rec.noise[0].shape == logits.shape
    assert torch.equal((logits + rec.noise[0]).argmax(2), want.argmax(2))
    assert rec.softmax is F.softmax  # everything else is torch.nn.functional's
