"""Reading what the report is made from: typed results (pipeline.results) and engine graph sets, each with the
hash of the file read, refused in one line that names the fix."""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from ..errors import DvitError
from ..graphset import GraphSet
from ..io import sha256_file
from ..manifest import MANIFEST_NAME
from ..results import formats
from ..results.jsonfile import WrongFormat
from ..results.latency import LatencyResult
from ..results.reference import Recording, load_recording
from ..results.validation import ValidationResult

# The report's option for each result kind it reads, for "pass it with --latency" when one comes in the wrong place.
OPTIONS = {formats.VALIDATION: "--validation", formats.LATENCY: "--latency"}
T = TypeVar("T")


@dataclass
class Source:
    role: str  # validation, latency, engines, reference
    path: Path
    sha256: str


@dataclass
class Inputs:
    validations: list[ValidationResult] = field(default_factory=list)
    latencies: list[LatencyResult] = field(default_factory=list)
    engines: list[GraphSet] = field(default_factory=list)  # of kind "engine"
    reference: Recording | None = None
    sources: list[Source] = field(default_factory=list)


def _taken(load: Callable[[str | os.PathLike[str]], T], path: str | os.PathLike[str], fmt: formats.ResultFormat) -> T:
    """load(path), where a result the report takes with another option is refused naming that option."""
    try:
        return load(path)
    except WrongFormat as e:
        if e.found is not None and e.found != fmt and e.found in OPTIONS:
            raise DvitError(f"{e.path} is a {e.found.what}, not a {fmt.what}: pass it with {OPTIONS[e.found]}") from None
        raise


def load_validation(path: str | os.PathLike[str]) -> ValidationResult:
    return _taken(ValidationResult.load, path, formats.VALIDATION)


def load_latency(path: str | os.PathLike[str]) -> LatencyResult:
    return _taken(LatencyResult.load, path, formats.LATENCY)


def load_engines(path: str | os.PathLike[str]) -> GraphSet:
    root = Path(path)
    fix = "point --engines at the output of 'dvit build'"
    if not (root / MANIFEST_NAME).is_file():
        raise DvitError(f"--engines {root} has no {MANIFEST_NAME}: {fix}")
    try:
        raw = json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, ValueError) as e:
        raise DvitError(f"{root / MANIFEST_NAME} is not a readable JSON file ({e}): {fix}") from e
    kind = raw.get("kind") if isinstance(raw, dict) else None
    if kind != "engine":
        raise DvitError(f"--engines {root} holds a '{kind}' manifest, not engines: {fix}")
    return GraphSet.load(root, ("engine",))  # verifies every engine's (and layer report's) hash


def read_inputs(validations: Sequence[str | os.PathLike[str]], latencies: Sequence[str | os.PathLike[str]] = (),
                engines: Sequence[str | os.PathLike[str]] = (), reference: str | os.PathLike[str] | None = None) -> Inputs:
    if not validations:
        raise DvitError("no validation result to report on: run 'dvit validate --graphs DIR --json V.json' first, "
                        "then pass --validation V.json")
    inp = Inputs()
    for path in validations:
        v = load_validation(path)
        inp.validations.append(v)
        inp.sources.append(Source("validation", Path(path), str(v.sha256)))
    for path in latencies:
        lat = load_latency(path)
        inp.latencies.append(lat)
        inp.sources.append(Source("latency", Path(path), str(lat.sha256)))
    for d in engines:
        gs = load_engines(d)
        inp.engines.append(gs)
        inp.sources.append(Source("engines", gs.root / MANIFEST_NAME, gs.sha256))
    if reference is not None:
        rec = load_recording(reference)
        inp.reference = rec
        inp.sources.append(Source("reference", rec.path, rec.npz_sha256))
        inp.sources.append(Source("reference", rec.json_path, sha256_file(rec.json_path)))
    return inp
