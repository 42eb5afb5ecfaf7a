"""What `dvit validate --json` writes, format "dvit-edge/validation/v2" (its fields: pipeline/validate's docstring).

A thin typed wrapper over the JSON object: the object is what was written, field for field, so reading and
writing it again gives the same bytes; the accessors name what readers use.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DvitError
from . import jsonfile
from .formats import VALIDATION

FORMAT = VALIDATION.name
TOP_KEYS = ("graphs_dir", "manifest", "precision", "reference", "dataset", "chain", "fused", "chain_vs_fused",
            "requirements")
PART_KEYS = ("accuracy", "agreement", "logits", "kept")


def check(p: Path, obj: dict[str, Any]) -> None:
    """Refuse another format, or a validation result without the sections readers use."""
    jsonfile.check_format(p, obj, VALIDATION)
    jsonfile.need(p, obj, TOP_KEYS, VALIDATION.what, VALIDATION)
    for part in ("chain", "fused"):
        if not isinstance(obj[part], dict):
            raise DvitError(f"{p}: {part!r} is not an object: {jsonfile.fix_for(VALIDATION)}")
        jsonfile.need(p, obj[part], PART_KEYS, f"{VALIDATION.what}'s {part} section", VALIDATION)


class ValidationResult(jsonfile.JsonResult):
    FMT = VALIDATION
    check = staticmethod(check)

    @property
    def graphs_dir(self) -> str | None:
        return self.data.get("graphs_dir")

    @property
    def manifest_kind(self) -> str | None:
        return (self.data.get("manifest") or {}).get("kind")

    @property
    def manifest_sha256(self) -> str | None:
        return (self.data.get("manifest") or {}).get("sha256")

    @property
    def precision(self) -> list[str]:
        return list(self.data.get("precision") or [])

    @property
    def model_config(self) -> dict[str, Any] | None:
        """The model config the validated graphs came from (carried in the JSON for when they are gone)."""
        return (self.data.get("model") or {}).get("config") or None

    @property
    def reference(self) -> dict[str, Any]:
        return dict(self.data.get("reference") or {})

    @property
    def chain(self) -> dict[str, Any]:
        return dict(self.data["chain"])

    @property
    def fused(self) -> dict[str, Any]:
        return dict(self.data["fused"])

    @property
    def keep_counts(self) -> list[int]:
        """Tokens kept at each pruning point, as the stage chain ran them."""
        return [int(k["keep_count"]) for k in self.data["chain"]["kept"]]

    @property
    def providers(self) -> list[str]:
        return [str(p) for p in self.data.get("providers") or []]

    @property
    def requirements(self) -> dict[str, Any]:
        return dict(self.data.get("requirements") or {})

    @property
    def passed(self) -> bool | None:
        return self.requirements.get("passed")
