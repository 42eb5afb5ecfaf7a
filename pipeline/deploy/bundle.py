"""What `dvit deploy` ships to the device, with the sha256 of every file.

A bundle is laid out as the device sees it (one release directory):

    graphs/            the graph set: manifest.json and every file it lists (hashes verified before shipping)
    reference/         the recorded PyTorch reference, REF.npz + REF.json (`dvit reference`), when given
    plugins/           the plugin sources and CMake files (built on the device with its own CUDA)
    targets/NAME.toml  the target profile
    pipeline/          the project's Python package (the device-side code runs from here)
    pyproject.toml     its dependencies (`pip install .[device,...]` on the device)
    README.md          the package's readme, which pyproject.toml names (pip warns when it is missing)
    bundle.json        this manifest: every file above with sha256 and size (deterministic: no timestamps, so an
                       unchanged bundle ships nothing)
    SHA256SUMS         the same hashes for `sha256sum -c` on the device

Needs only the standard library and the graph-set reader.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DvitError
from ..graphset import GraphSet
from ..io import sha256_file
from ..manifest import MANIFEST_NAME
from ..targets import Target

FORMAT = "dvit-edge/deploy-bundle/v1"
MANIFEST = "bundle.json"
SUMS = "SHA256SUMS"
REPO = Path(__file__).resolve().parents[2]
# Never shipped: build outputs and caches that may sit in the source folders.
_SKIP_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".git"}
_SKIP_SUFFIXES = (".pyc", ".pyo", ".so", ".o", ".a")


@dataclass(frozen=True)
class BundleFile:
    dest: str  # path inside the release directory (POSIX)
    source: Path
    sha256: str
    bytes: int


@dataclass
class Bundle:
    files: list[BundleFile]
    target: Target
    graphs: GraphSet
    reference: str | None  # dest path of REF.npz inside the bundle
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    @property
    def uses_plugin(self) -> bool:
        return self.graphs.uses_plugin

    def manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "target": self.target.name,
            "graphs": {"kind": self.graphs.kind, "sha256": self.graphs.sha256, "precision": self.graphs.precision,
                       "batch_sizes": self.graphs.batch_sizes, "uses_plugin": self.uses_plugin},
            "reference": self.reference,
            "plugin_sources_sha256": self.plugin_sources_sha256(),
            "files": [{"file": f.dest, "sha256": f.sha256, "bytes": f.bytes} for f in self.files],
            "bytes": self.bytes,
            **self.info,
        }

    def plugin_sources_sha256(self) -> str:
        h = hashlib.sha256()
        for f in self.files:
            if f.dest.startswith("plugins/"):
                h.update(f"{f.dest}\0{f.sha256}\n".encode())
        return h.hexdigest()

    def sums(self) -> str:
        return "".join(f"{f.sha256}  {f.dest}\n" for f in self.files)

    def stage(self, root: str | os.PathLike[str]) -> Path:
        """Lay the bundle out under `root` (hard links where possible, else copies keeping mtimes)."""
        root = Path(root)
        for f in self.files:
            dst = root / f.dest
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(f.source, dst)
            except OSError:
                shutil.copy2(f.source, dst)
        (root / MANIFEST).write_text(json.dumps(self.manifest(), indent=2, sort_keys=True) + "\n")
        (root / SUMS).write_text(self.sums())
        return root


def _walk(root: Path, skip_build_dirs: bool = False) -> Iterator[Path]:
    """Files under `root`, sorted; `skip_build_dirs` leaves out CMake build folders (plugins/build*)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if d not in _SKIP_DIRS and not (skip_build_dirs and d.startswith("build")))
        for name in sorted(filenames):
            if not name.endswith(_SKIP_SUFFIXES):
                yield Path(dirpath) / name


def _entry(dest: str, source: Path) -> BundleFile:
    return BundleFile(dest, source, sha256_file(source), source.stat().st_size)


def graph_files(gs: GraphSet) -> list[str]:
    """Every file the graph set's manifest lists (relative to its root), manifest first."""
    from ..manifest import _walk_files

    rels = sorted({str(e["file"]) for e in _walk_files(gs.manifest)})
    return [MANIFEST_NAME, *rels]


def plan(graphs: str | os.PathLike[str], target: Target, reference: str | os.PathLike[str] | None = None,
         repo: str | os.PathLike[str] = REPO) -> Bundle:
    """The bundle for `graphs` (verified), `target` and the optional recording; every file hashed."""
    gs = GraphSet.load(graphs)  # verifies every hash: a tampered graph set never leaves this machine
    repo = Path(repo)
    files: list[BundleFile] = []
    for rel in graph_files(gs):
        src = gs.root / rel
        if not src.is_file():
            raise DvitError(f"{src} is listed in {gs.root / MANIFEST_NAME} but missing: re-run the stage that wrote it")
        files.append(_entry(f"graphs/{rel}", src))
    ref_dest = None
    if reference is not None:
        p = Path(reference)
        stem = p.with_suffix("") if p.suffix in (".npz", ".json") else p
        npz, meta = stem.with_suffix(".npz"), stem.with_suffix(".json")
        if not npz.is_file() or not meta.is_file():
            raise ConfigError(f"--reference {reference}: no recording there ({npz.name} and {meta.name}): make one "
                              f"with 'dvit reference --graphs {gs.root} --out {npz}'")
        files += [_entry(f"reference/{npz.name}", npz), _entry(f"reference/{meta.name}", meta)]
        ref_dest = f"reference/{npz.name}"
    plugins = repo / "plugins"
    if plugins.is_dir():
        files += [_entry(f"plugins/{p.relative_to(plugins).as_posix()}", p)
                  for p in _walk(plugins, skip_build_dirs=True)]
    files.append(_entry(f"targets/{target.path.name}", target.path))
    package = repo / "pipeline"
    files += [_entry(f"pipeline/{p.relative_to(package).as_posix()}", p) for p in _walk(package)]
    if not (repo / "pyproject.toml").is_file():
        raise ConfigError(f"no pyproject.toml in {repo}: run dvit deploy from a dvit-edge checkout")
    files.append(_entry("pyproject.toml", repo / "pyproject.toml"))
    if (repo / "README.md").is_file():
        files.append(_entry("README.md", repo / "README.md"))
    dests = [f.dest for f in files]
    if len(set(dests)) != len(dests):
        raise DvitError(f"internal: bundle paths collide: {sorted(d for d in dests if dests.count(d) > 1)}")
    return Bundle(files=files, target=target, graphs=gs, reference=ref_dest)


def verify(root: str | os.PathLike[str]) -> list[str]:
    """Files under `root` whose hash differs from bundle.json (or that are missing); [] when all match."""
    root = Path(root)
    m = json.loads((root / MANIFEST).read_text())
    bad = []
    for e in m["files"]:
        p = root / e["file"]
        if not p.is_file() or sha256_file(p) != e["sha256"]:
            bad.append(e["file"])
    return bad
