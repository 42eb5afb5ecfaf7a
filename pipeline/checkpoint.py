"""Checkpoints: ours (model config + weights + training state), official DynamicViT, and timm/DeiT.

Every command that takes a checkpoint goes through load_model (and --init-from through init_from_pretrained, a
training's --teacher through load_teacher, which share extract_state_dict and load_weights with it; those two fit
weights made for another input size or channel count when asked, see checkpoint_filters).

Official DynamicViT checkpoints ({'model': state_dict} of VisionTransformerDiffPruning) and timm/DeiT
state dicts use our parameter names already (see model.py), so loading needs no renaming; only wrapper
keys and DDP's 'module.' prefix are stripped. A file of another architecture than --model is refused with one line
describing both (from its shapes, see check_architecture); any other mismatch names the offending keys and shapes.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import ModelConfig
from .errors import CheckpointError
from .io import atomic_write
from .model import DynamicViT

FORMAT = "dvit-edge/checkpoint/v1"


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found: pass the path of a .pt file written by 'dvit train'")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many kinds for a corrupt file
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a PyTorch file ({type(e).__name__}): re-create it with 'dvit train'"
        ) from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict")
    return obj


def extract_state_dict(obj: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights inside our, official (`model`), timm (`state_dict`/EMA) or bare checkpoints."""
    for key in ("model", "state_dict", "state_dict_ema", "model_ema"):
        if key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError("checkpoint holds no tensors: it is not a model checkpoint")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def load_weights(
    model: nn.Module,
    sd: dict[str, torch.Tensor],
    *,
    allow_missing: tuple[str, ...] = (),
    ignore_unexpected: tuple[str, ...] = (),
    source: str = "checkpoint",
) -> list[str]:
    """Strict load, except for missing keys under `allow_missing` prefixes (returned) and unexpected keys
    under `ignore_unexpected` prefixes. Anything else raises one line naming keys and shapes."""
    own = model.state_dict()
    shape_bad = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in sd and sd[k].shape != v.shape
    ]
    missing = [k for k in own if k not in sd]
    allowed_missing = [k for k in missing if k.startswith(allow_missing)] if allow_missing else []
    missing = [k for k in missing if k not in allowed_missing]
    unexpected = [k for k in sd if k not in own and not (ignore_unexpected and k.startswith(ignore_unexpected))]
    problems = []
    if shape_bad:
        problems.append(f"shape mismatch (checkpoint vs model): {_clip(shape_bad)}")
    if missing:
        problems.append(f"missing keys: {_clip(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_clip(unexpected)}")
    if problems:
        raise CheckpointError(
            f"{source} does not match the model configuration: {'; '.join(problems)}. "
            "Pass the --model/--keep-ratio the checkpoint was trained with, or the matching checkpoint"
        )
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    return allowed_missing


def _clip(items: list[str], n: int = 4) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def save_checkpoint(path: str | os.PathLike[str], model: DynamicViT, **extra: Any) -> Path:
    """Atomic: the previous file stays intact until the new one is complete."""
    payload = {"format": FORMAT, "config": model.cfg.to_dict(), "model": model.state_dict(), **extra}
    return atomic_write(path, lambda p: torch.save(payload, p))


def config_of(obj: dict[str, Any], path: str | os.PathLike[str]) -> ModelConfig:
    if obj.get("format") != FORMAT or "config" not in obj:
        raise CheckpointError(
            f"{path} is not a dvit-edge checkpoint (no model config inside): name its architecture with --model "
            "(e.g. --model deit_small_patch16_224 --keep-ratio 0.7 for an official DynamicViT checkpoint)"
        )
    return ModelConfig.from_dict(obj["config"])


def is_ours(obj: dict[str, Any]) -> bool:
    return obj.get("format") == FORMAT and "config" in obj


def foreign_config(sd: dict[str, torch.Tensor], preset: str, keep_ratio: float | None = None) -> ModelConfig:
    """The configuration of an official DynamicViT or timm/DeiT state dict, from its preset and its weights:
    dense when it has no prediction modules (a teacher), classes from its head."""
    from .config import model_config

    dense = not any(k.startswith("score_predictor.") for k in sd)
    head = sd.get("head.weight")
    classes = int(head.shape[0]) if head is not None else None
    return model_config(preset, keep_ratio=keep_ratio, num_classes=classes, dense=dense)


def weights_architecture(sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    """What a ViT state dict's shapes say about its architecture: embed_dim, patch_size, in_chans, img_size (or
    the token count where the grid is not square), depth, mlp_ratio, num_classes, pruning points. Only what the
    file holds; the head count is not among it (qkv is [3C, C] for any number of heads)."""
    arch: dict[str, Any] = {}
    proj = sd.get("patch_embed.proj.weight")
    stem = sd.get("patch_embed.conv1.weight")  # LV-ViT's convolutional stem (Token Labeling's '4_2')
    arch["family"] = "lvvit" if stem is not None or "aux_head.weight" in sd else "deit"
    if proj is not None and proj.ndim == 4 and stem is not None and stem.ndim == 4:
        # the stem halves the image, then a patch/2 projection: the grid is img / (2 x its kernel)
        arch.update(embed_dim=int(proj.shape[0]), in_chans=int(stem.shape[1]), patch_size=2 * int(proj.shape[-1]))
    elif proj is not None and proj.ndim == 4:
        arch.update(embed_dim=int(proj.shape[0]), in_chans=int(proj.shape[1]), patch_size=int(proj.shape[-1]))
    elif "cls_token" in sd:
        arch["embed_dim"] = int(sd["cls_token"].shape[-1])
    pos = sd.get("pos_embed")
    if pos is not None and pos.ndim == 3:
        grid = math.isqrt(max(int(pos.shape[1]) - 1, 0))
        if grid * grid == int(pos.shape[1]) - 1 and "patch_size" in arch:
            arch["img_size"] = grid * arch["patch_size"]
        else:
            arch["tokens"] = int(pos.shape[1])
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    if blocks:
        arch["depth"] = max(blocks) + 1
    fc1 = sd.get("blocks.0.mlp.fc1.weight")
    if fc1 is not None and fc1.ndim == 2 and fc1.shape[1]:
        arch["mlp_ratio"] = float(fc1.shape[0]) / float(fc1.shape[1])
    head = sd.get("head.weight")
    if head is not None and head.ndim == 2:
        arch["num_classes"] = int(head.shape[0])
    arch["pruning_points"] = len({int(m.group(1)) for k in sd if (m := re.match(r"score_predictor\.(\d+)\.", k))})
    return arch


def config_architecture(cfg: ModelConfig) -> dict[str, Any]:
    """The same fields as weights_architecture, for a configuration (plus its head count)."""
    return {
        "family": cfg.family, "embed_dim": cfg.embed_dim, "in_chans": cfg.in_chans, "patch_size": cfg.patch_size, "img_size": cfg.img_size,
        "tokens": cfg.num_patches + 1, "depth": cfg.depth, "mlp_ratio": float(cfg.mlp_ratio),
        "num_classes": cfg.num_classes, "pruning_points": len(cfg.pruning_loc), "num_heads": cfg.num_heads,
    }


_ARCH_FIELDS = ("family", "embed_dim", "depth", "num_heads", "patch_size", "img_size", "tokens", "in_chans", "mlp_ratio",
                "num_classes", "pruning_points")


def describe_architecture(arch: dict[str, Any]) -> str:
    from .config import FAMILY_NAMES

    if "family" in arch:
        arch = {**arch, "family": FAMILY_NAMES.get(arch["family"], arch["family"])}
    words = {"family": "","embed_dim": "embed", "num_heads": "heads", "patch_size": "patch", "img_size": "image",
             "in_chans": "channels", "mlp_ratio": "MLP ratio", "num_classes": "classes", "pruning_points": "pruning points"}
    shown = [f for f in _ARCH_FIELDS if f in arch and not (f == "tokens" and "img_size" in arch)]
    return ", ".join(f"{words.get(f, f)} {arch[f]:g}".strip() if isinstance(arch[f], float)
                     else f"{words.get(f, f)} {arch[f]}".strip() for f in shown)


ADAPTABLE = ("img_size", "tokens", "in_chans")  # what checkpoint_filters.fit_input can map onto another input


def check_architecture(sd: dict[str, torch.Tensor], cfg: ModelConfig, path: str | os.PathLike[str],
                       wanted: str, ignore: tuple[str, ...] = ()) -> None:
    """Refuse a foreign state dict whose shapes say another architecture than `cfg` with one line naming both,
    and the presets (official names first) the file fits where its shapes say enough to tell. Fields in `ignore`
    (ADAPTABLE, where the input is fitted next) are not compared."""
    from .config import OFFICIAL_NAMES, PRESETS

    have = weights_architecture(sd)
    want = config_architecture(cfg)
    # Classes come from the head and a dense teacher has no prediction modules: neither tells a wrong --model.
    compared = [f for f in have if f in want and f != "num_classes" and f not in ignore
                and not (f == "pruning_points" and (have[f] == 0 or cfg.is_dense))
                and not (f == "tokens" and "dist_token" in sd)]  # distilled DeiT: load_weights names its token
    if all(have[f] == want[f] for f in compared):
        return
    names = list(OFFICIAL_NAMES) + [n for n in PRESETS if n not in OFFICIAL_NAMES]
    seen: set[str] = set()
    fits = []
    for n in names:
        arch = config_architecture(PRESETS[n])
        if PRESETS[n].name not in seen and all(have[f] == arch[f] for f in compared if f != "pruning_points"):
            seen.add(PRESETS[n].name)
            fits.append(n)
    its = [f"{n} (= {PRESETS[n].name})" if PRESETS[n].name != n else n for n in fits]
    file_kind = f"a {' / '.join(its)} model" if its else "a model of another architecture"
    fix = (f"pass --model {fits[0]}" if len(fits) == 1 else
           f"pass the --model it was trained with ({', '.join(fits)})" if fits else
           "pass the --model the checkpoint was trained with, or the matching checkpoint")
    hidden = ("num_classes",) if have.get("family") != want["family"] else ("num_classes", "family")
    raise CheckpointError(
        f"checkpoint {path} does not match the model configuration: it holds {file_kind} "
        f"({describe_architecture({f: have[f] for f in _ARCH_FIELDS if f in have and f not in hidden})}), "
        f"not '{wanted}' ({describe_architecture({f: want[f] for f in _ARCH_FIELDS if f in want and f not in ('tokens', *hidden)})}): {fix}"
    )


def _spatial_request(obj: dict[str, Any], expect: Any, preset: str | None) -> Any:
    """pipeline.spatial.load when the file or the request is a ConvNeXt/Swin one (imported only then), else None;
    a spatial file asked for as a ViT (or the reverse) is refused in one line naming both."""
    from .spatial.config import SPATIAL_FAMILIES, SPATIAL_PRESETS

    ours_family = obj.get("config", {}).get("family") if is_ours(obj) else None
    file_spatial = ours_family in SPATIAL_FAMILIES
    asked = (expect is not None and getattr(expect, "family", None) in SPATIAL_FAMILIES) or preset in SPATIAL_PRESETS
    asked_vit = (expect is not None and not asked) or (preset is not None and preset not in SPATIAL_PRESETS)
    if file_spatial and asked_vit:
        raise CheckpointError(f"checkpoint holds a '{obj['config'].get('name')}' model ({ours_family}), not the token-"
                              f"pruning '{getattr(expect, 'name', preset)}': pass --model {obj['config'].get('name')}")
    if is_ours(obj) and not file_spatial and asked:
        raise CheckpointError(f"checkpoint holds a '{obj['config'].get('name')}' model ({ours_family or 'deit'}), not "
                              f"'{getattr(expect, 'name', preset)}': pass --model {obj['config'].get('name')}")
    if file_spatial or asked:
        from .spatial import load

        return load
    return None


def load_model(
    path: str | os.PathLike[str], expect: Any = None, keep_ratio: float | None = None,
    preset: str | None = None,
) -> Any:
    """The one checkpoint loader: ours (config inside), official DynamicViT ({'model': ...}) or timm/DeiT state dicts.

    Our files say their architecture; a foreign file takes it from `expect` (a manifest's config) or from the
    preset named on the command line (`--model deit_small_patch16_224 --keep-ratio 0.7`). With `expect`, the
    architecture must equal it. `keep_ratio` runs the same weights at another ratio (ModelConfig validates it).
    """
    obj = read_checkpoint(path)
    sd = extract_state_dict(obj)
    spatial = _spatial_request(obj, expect, preset)
    if spatial is not None:
        return spatial.load_spatial(path, obj, sd, preset=preset, keep_ratio=keep_ratio,
                                    expect=expect if not isinstance(expect, ModelConfig) else None)
    assert expect is None or isinstance(expect, ModelConfig)
    if is_ours(obj):
        cfg = config_of(obj, path)
    elif expect is not None:
        cfg = expect
    elif preset is not None:
        cfg = foreign_config(sd, preset, keep_ratio)
    else:
        config_of(obj, path)  # raises: a foreign file needs --model
        raise AssertionError("unreachable")
    if expect is not None and cfg.architecture_key() != expect.architecture_key():
        diff = {
            k: (cfg.architecture_key()[k], v) for k, v in expect.architecture_key().items() if cfg.architecture_key()[k] != v
        }
        raise CheckpointError(
            f"checkpoint {path} was trained for another configuration ({', '.join(f'{k}: {a} vs {b}' for k, (a, b) in diff.items())}): "
            "pass the matching checkpoint or configuration"
        )
    if preset is not None and is_ours(obj) and cfg.architecture_key() != foreign_config(sd, preset).architecture_key():
        raise CheckpointError(f"checkpoint {path} holds a '{cfg.name}' model, not '{preset}': drop --model or pass the matching file")
    if expect is not None:
        cfg = expect
    if not is_ours(obj):
        check_architecture(sd, cfg, path, preset if preset is not None and expect is None else cfg.name)
    if keep_ratio is not None:
        cfg = cfg.replace(keep_ratio=float(keep_ratio))
    model = DynamicViT(cfg)
    load_weights(model, sd, source=f"checkpoint {path}")
    return model.eval()


def init_from_pretrained(model: DynamicViT, path: str | os.PathLike[str], *, interpolate: bool = False,
                         notes: list[str] | None = None) -> list[str]:
    """Backbone (and predictor, when present) weights from an official DynamicViT, timm/DeiT or our file; returns the
    keys left to the model's own initialisation.

    Prediction modules may be missing (a dense teacher or timm ViT initialises the student); timm's
    distillation token / head_dist of DeiT-distilled models are refused with a clear error by the strict check.
    A classifier head for other classes starts fresh (fine-tuning on new data, as timm does); weights of another
    input size or channel count are fitted only with `interpolate` (checkpoint_filters.fit_input). What was
    changed is appended to `notes`, one line each.
    """
    from .checkpoint_filters import fit_input

    if str(path).startswith("timm:"):
        sd, source = timm_pretrained_state_dict(str(path)[len("timm:") :]), f"timm model {str(path)[5:]}"
    else:
        sd, source = extract_state_dict(read_checkpoint(path)), f"checkpoint {path}"
    cfg = model.cfg
    check_family(weights_architecture(sd)["family"], cfg, source, "--init-from")
    fitted = fit_input(sd, cfg, allow=interpolate, source=source, replace_head=True)
    if notes is not None:
        notes.extend(fitted.notes)
    missing = load_weights(model, fitted.state_dict, allow_missing=("score_predictor.", *fitted.fresh), source=source)
    return missing


def check_family(have: str, cfg: Any, source: str, role: str) -> None:
    """One line when weights of one family (DeiT, LV-ViT, ConvNeXt, Swin) are given for a model of another: their
    layers differ throughout, so no filter maps one onto the other. `cfg`: a ModelConfig or a SpatialConfig."""
    from .config import LAYOUT_NAMES

    if have == cfg.family:
        return
    a, b = LAYOUT_NAMES.get(have, have), LAYOUT_NAMES.get(cfg.family, cfg.family)
    fix = ("or drop --teacher to train a dense teacher of the student's architecture first" if role == "--teacher"
           else "or drop --init-from")
    raise CheckpointError(
        f"{source} holds {article(a)} {a} model and '{cfg.name}' is {article(b)} {b} model: pass {role} with "
        f"{article(b)} {b} checkpoint of the same architecture, {fix}"
    )


def article(word: str) -> str:
    """'a' or 'an' before a family's name."""
    return "an" if word[:1].upper() in "AEIOU" or word.startswith("LV") else "a"


def load_teacher(path: str | os.PathLike[str], student: ModelConfig, *, interpolate: bool = False,
                 notes: list[str] | None = None) -> DynamicViT:
    """The dense teacher a student of config `student` distils from, at the student's input: ours, an official or
    Token Labeling teacher, or timm/DeiT weights. Checked before anything is written, each refusal one line: another
    family (DeiT vs LV-ViT), prediction modules in the file, another architecture or class count; another input
    size or channel count unless `interpolate` (then fitted, see checkpoint_filters; the changes go to `notes`)."""
    from .checkpoint_filters import fit_input

    obj = read_checkpoint(path)
    sd = extract_state_dict(obj)
    want = student.as_dense()
    source = f"teacher checkpoint {path}"
    if is_ours(obj):  # the family first: a ConvNeXt or Swin file has no ViT config to read
        check_family(str(obj["config"].get("family", "deit")), want, source, "--teacher")
    ours = config_of(obj, path) if is_ours(obj) else None
    check_family(ours.family if ours is not None else weights_architecture(sd)["family"], want, source, "--teacher")
    predictors = len(ours.pruning_loc) if ours is not None else weights_architecture(sd)["pruning_points"]
    if predictors:
        raise CheckpointError(
            f"{source} is a pruned student ({predictors} prediction modules), not a dense teacher: pass the dense "
            "teacher (written by 'dvit train --mode teacher'), or drop --teacher to train one first"
        )
    if ours is not None:
        mine, theirs = ours.architecture_key(), want.architecture_key()
        diff = [k for k in theirs if k not in ("img_size", "in_chans", "num_classes") and mine.get(k) != theirs[k]]
        if diff:
            raise CheckpointError(
                f"{source} holds a '{ours.name}' model ({describe_architecture(config_architecture(ours))}), not the "
                f"dense '{want.name}' ({describe_architecture(config_architecture(want))}) the student distils from: "
                "pass a teacher of the student's architecture, or drop --teacher to train one first"
            )
        classes = ours.num_classes
    else:
        check_architecture(sd, want, source, want.name, ignore=ADAPTABLE)
        classes = weights_architecture(sd).get("num_classes", want.num_classes)
    if classes != want.num_classes:
        raise CheckpointError(
            f"{source} has {classes} classes and the data {want.num_classes}: pass a teacher trained on this data, "
            "or drop --teacher to train one first"
        )
    fitted = fit_input(sd, want, allow=interpolate, source=source)
    if notes is not None:
        notes.extend(fitted.notes)
    model = DynamicViT(want)
    load_weights(model, fitted.state_dict, source=source)
    return model.eval()


def timm_pretrained_state_dict(name: str) -> dict[str, torch.Tensor]:
    """timm's own pretrained weights: a download, made only when the user names `timm:<model>` explicitly."""
    import timm

    try:
        model = timm.create_model(name, pretrained=True)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise CheckpointError(f"timm has no model '{name}': see timm.list_models('deit*')") from e
        raise CheckpointError(
            f"could not download timm weights for '{name}' ({e}): pass a local checkpoint file to --init-from"
        ) from e
    except OSError as e:  # no network, hub unreachable
        raise CheckpointError(
            f"could not download timm weights for '{name}' ({type(e).__name__}): this machine cannot reach the "
            "Hugging Face hub; pass a local checkpoint file to --init-from"
        ) from e
    return model.state_dict()
