"""Manifests: the only interface between stages.

Each stage writes `manifest.json` beside its artifacts: what produced them (model config, keep ratio,
checkpoint hash, package versions), what they are (per-file shapes and hashes) and what they came from (the
upstream manifest's hash). A reader verifies every hash before trusting a file, so a tampered or stale
artifact is refused instead of silently compiled.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import Any

from .errors import ManifestError
from .io import atomic_write_json, sha256_file

MANIFEST_NAME = "manifest.json"
VERSIONED_PACKAGES = (
    "torch", "timm", "onnx", "onnxruntime-gpu", "onnxruntime", "onnxsim", "onnx-graphsurgeon", "polygraphy",
    "nvidia-modelopt", "numpy", "tensorrt",
)


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def file_entry(root: Path, rel: str, **info: Any) -> dict[str, Any]:
    """A manifest entry for file `rel` under `root`: its hash, size and whatever describes it."""
    path = root / rel
    return {"file": rel, "sha256": sha256_file(path), "bytes": path.stat().st_size, **info}


def write_manifest(root: str | os.PathLike[str], kind: str, body: dict[str, Any]) -> Path:
    """`kind` names the stage ("export", "precision", ...); body must list its files under "files"."""
    manifest = {"format": f"dvit-edge/{kind}/v1", "kind": kind, "versions": package_versions(), **body}
    return atomic_write_json(Path(root) / MANIFEST_NAME, manifest)


def _walk_files(obj: Any) -> list[dict[str, Any]]:
    """Every dict carrying both 'file' and 'sha256', wherever it sits in the manifest."""
    found: list[dict[str, Any]] = []
    if isinstance(obj, dict):
        if "file" in obj and "sha256" in obj:
            found.append(obj)
        for v in obj.values():
            found.extend(_walk_files(v))
    elif isinstance(obj, list):
        for v in obj:
            found.extend(_walk_files(v))
    return found


def read_manifest(root: str | os.PathLike[str], kind: str | None = None, verify: bool = True) -> dict[str, Any]:
    """Load and verify a stage's manifest; refuses with one line on a missing, foreign or tampered artifact."""
    root = Path(root)
    path = root / MANIFEST_NAME if root.is_dir() else root
    root = path.parent
    if not path.is_file():
        raise ManifestError(f"no {MANIFEST_NAME} in {root}: run the previous stage (e.g. 'dvit export') into it first")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path} is not valid JSON ({e}): re-run the stage that wrote it") from e
    if kind is not None and manifest.get("kind") != kind:
        raise ManifestError(
            f"{path} is a '{manifest.get('kind')}' manifest, but a '{kind}' one is needed: point at the {kind} output"
        )
    if verify:
        for entry in _walk_files(manifest):
            f = root / entry["file"]
            if not f.is_file():
                raise ManifestError(f"{f} is listed in {path} but missing: re-run the stage that wrote {root}")
            if sha256_file(f) != entry["sha256"]:
                raise ManifestError(
                    f"{f} does not match the hash in {path} (modified after it was written): re-run the stage"
                )
    manifest["_root"] = str(root)
    manifest["_sha256"] = sha256_file(path)
    return manifest
