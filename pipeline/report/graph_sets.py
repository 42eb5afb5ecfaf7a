"""What the report knows of the graph sets its inputs name: their manifests where the directories are here.

A validation or latency result names graph-set directories; the report reads each one's manifest once per
render (the `Manifests` a render makes, never a cache that outlives it) for the keep ratio, the checkpoint and
whether the manifest still has the hash the validation recorded.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..io import sha256_file
from ..results.validation import ValidationResult


class Manifests:
    """Graph-set manifests read during one render, each at most once."""

    def __init__(self) -> None:
        self._read: dict[str, tuple[dict[str, Any], str] | None] = {}

    def get(self, graphs_dir: str | None) -> tuple[dict[str, Any] | None, str | None]:
        """The raw manifest of a graph-set directory and its sha256, or (None, None) where it is not here."""
        if not graphs_dir:
            return None, None
        path = Path(graphs_dir) / "manifest.json"
        key = str(path.resolve()) if path.exists() else str(path)
        if key not in self._read:
            try:
                self._read[key] = (json.loads(path.read_text()), sha256_file(path))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                self._read[key] = None
        got = self._read[key]
        return got if got else (None, None)

    def keep_ratio(self, graphs_dir: str | None) -> float | None:
        m, _ = self.get(graphs_dir)
        if m is None:
            return None
        kr = m.get("keep_ratio", (m.get("model_config") or {}).get("keep_ratio"))
        return None if kr is None else float(kr)

    def label(self, graphs_dir: str | None, kind: str | None, keep_ratio: float | None = None) -> str:
        """How the report names a graph set: its directory's name and keep ratio ("export-0.5, keep 0.5")."""
        if not graphs_dir:
            return kind or "graphs"
        kr = self.keep_ratio(graphs_dir) if keep_ratio is None else keep_ratio
        return Path(graphs_dir).name + (f", keep {kr:g}" if kr is not None else "")


def graph_set_info(v: ValidationResult, manifests: Manifests) -> dict[str, Any]:
    """What the validated graph set was: from its manifest where the directory is here, else from the JSON."""
    m, sha = manifests.get(v.graphs_dir)
    info: dict[str, Any] = {"dir": v.graphs_dir, "kind": v.manifest_kind, "sha256": v.manifest_sha256,
                            "precision": v.precision, "keep_counts": v.keep_counts, "keep_ratio": None,
                            "model": None, "config": None, "batch_sizes": None, "checkpoint": None,
                            "teacher_checkpoint": None, "manifest_here": m is not None, "manifest_matches": None}
    if m is not None:
        cfg = m.get("model_config") or {}
        info.update(keep_ratio=m.get("keep_ratio", cfg.get("keep_ratio")), model=cfg.get("name"), config=cfg or None,
                    batch_sizes=m.get("batch_sizes"), checkpoint=m.get("checkpoint"),
                    teacher_checkpoint=m.get("teacher_checkpoint"), manifest_matches=sha == info["sha256"])
    else:
        cfg = v.model_config or {}  # the validation JSON carries the model it validated
        info.update(keep_ratio=cfg.get("keep_ratio"), model=cfg.get("name"), config=cfg or None)
        ref = v.reference
        if ref.get("kind") == "pytorch" and ref.get("matches_manifest") and ref.get("checkpoint"):
            info["checkpoint"] = ref["checkpoint"]
        elif ref.get("kind") == "recorded" and ref.get("recording"):
            info["checkpoint"] = {"path": None, "sha256": ref["recording"].get("checkpoint_sha256")}
    return info
