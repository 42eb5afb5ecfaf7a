"""make_report: read the inputs, build the model, render the page and the Markdown, write the three files as
one directory (atomically: it appears complete or not at all)."""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DvitError
from ..io import atomic_dir
from . import html, markdown
from .inputs import read_inputs
from .model import DEFAULT_IMAGES, build

FILES = ("report.html", "report.md", "report.json")


def json_safe(obj: Any) -> Any:
    """JSON without NaN/Infinity (not JSON; browsers and jq refuse them): such values become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def make_report(
    validations: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    latencies: Sequence[str | os.PathLike[str]] = (),
    engines: Sequence[str | os.PathLike[str]] = (),
    reference: str | os.PathLike[str] | None = None,
    title: str | None = None,
    images: int = DEFAULT_IMAGES,
) -> Path:
    """Write DIR/report.html, report.md and report.json (atomically); returns DIR.

    An existing DIR is replaced only when it holds a previous report (nothing else is ever deleted)."""
    if images < 0:
        raise ConfigError(f"--images {images} is negative: pass how many test images to picture (0 for none)")
    out = Path(out)
    if out.exists() and (not out.is_dir() or not (out / "report.json").is_file()
                         or not {p.name for p in out.iterdir()} <= set(FILES)):
        raise DvitError(f"{out} exists and is not a previous report: choose a new --out (a report replaces only a report)")
    inp = read_inputs(validations, latencies, engines, reference)
    data, pictures = build(inp, title, images)
    data = json_safe(data)
    page = html.render(data, pictures)
    md = markdown.render(data)
    with atomic_dir(out) as tmp:
        (tmp / "report.html").write_text(page, encoding="utf-8")
        (tmp / "report.md").write_text(md, encoding="utf-8")
        (tmp / "report.json").write_text(json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n", encoding="utf-8")
    return out
