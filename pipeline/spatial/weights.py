"""Loading a state dict into a DynamicCNN or DynamicSwin: the checks both families share, after each has mapped
its file's layout (official, Facebook/Microsoft, timm) to the official names."""
from __future__ import annotations

import os
from collections.abc import Callable

from torch import Tensor, nn

from ..checkpoint import _clip, load_weights
from ..errors import CheckpointError


def load_checked(model: nn.Module, sd: dict[str, Tensor], path: str | os.PathLike[str], *, from_dense: bool,
                 is_sparse: Callable[[str], bool], file_is: str, model_is: str) -> None:
    """Load `sd` into `model` after checking it holds the same backbone: the same keys and shapes outside the
    predictors, fast paths and head, and the same predictors and fast paths, unless `from_dense` lets a dense file
    start a sparse model (those keep their initialisation, as the official main.py starts a student from its
    teacher). A mismatch is one line: what the file is (`file_is`), what was asked (`model_is`), the keys that
    differ."""
    if "head.weight" not in sd:
        raise CheckpointError(f"{path} has no classification head (head.weight): pass a classifier checkpoint")
    own = model.state_dict()
    body = {k for k in own if not is_sparse(k) and not k.startswith("head.")}
    file_body = {k for k in sd if not is_sparse(k) and not k.startswith("head.")}
    sparse, file_sparse = {k for k in own if is_sparse(k)}, {k for k in sd if is_sparse(k)}
    dense_init = from_dense and not file_sparse
    reshaped = sorted(k for k in body & file_body if sd[k].shape != own[k].shape)
    only_file = sorted((file_body - body) | (set() if dense_init else file_sparse - sparse))
    only_model = sorted((body - file_body) | (set() if dense_init else sparse - file_sparse))
    if reshaped or only_file or only_model:
        differ = "; ".join(f"{what}: {_clip(keys, 3)}" for what, keys in (
            ("only in the file", only_file), ("only in the model", only_model), ("other shapes", reshaped)) if keys)
        raise CheckpointError(f"{path} is {file_is}, not {model_is} ({differ}): pass the matching --model/--keep-ratio "
                              "or the matching checkpoint")
    load_weights(model, sd, allow_missing=tuple(sorted(sparse)) if dense_init else (), source=f"checkpoint {path}")
