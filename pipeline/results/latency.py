"""What `dvit latency --json` writes, format "dvit-edge/latency/v1" (its fields: pipeline/latency's docstring),
and the one rule that pairs a pruned run with the dense run it is compared against.

The pairing: a pruned run's dense run is the timed dense run of the same graph set, batch, backend and I/O
variant (io, cuda_graph): the dense teacher graph timed beside it, in the same process. A graph set without a
dense run of its own has no ratio (its pruned runs are never compared with another set's teacher). The latency
stage writes its "ratios" by this rule and the report reads them; neither pairs by another.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DvitError
from . import jsonfile
from .formats import LATENCY

FORMAT = LATENCY.name
PAIR_KEY = ("graphs", "batch", "backend", "io", "cuda_graph")
RATIO_KEY = ("graphs", "backend", "batch", "mode", "io", "cuda_graph")  # a "ratios" entry: its pruned run's key


def is_timed(run: Mapping[str, Any]) -> bool:
    """A run with numbers (not one that says why its backend could not run)."""
    return "unavailable" not in run and "end_to_end" in run


def pair_key(run: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(run.get(k) for k in PAIR_KEY)


@dataclass(frozen=True)
class Pair:
    """A pruned run and the dense run it is compared with; either is None where it has no partner."""

    pruned: dict[str, Any] | None
    dense: dict[str, Any] | None

    def ratio(self, stat: str = "p50_ms") -> float | None:
        """Pruned over dense of one end-to-end statistic (p50_ms, mean_ms), None without both."""
        if self.pruned is None or self.dense is None:
            return None
        p = (self.pruned.get("end_to_end") or {}).get(stat)
        d = (self.dense.get("end_to_end") or {}).get(stat)
        return None if p is None or not d else p / d


def pair_pruned_dense(runs: Iterable[dict[str, Any]]) -> list[Pair]:
    """Every timed pruned run with its dense run (see the module docstring), in the order of `runs`; then the
    dense runs that no pruned run was paired with."""
    timed = [r for r in runs if is_timed(r)]
    dense_runs = [r for r in timed if r.get("model") == "dense"]
    dense: dict[tuple[Any, ...], dict[str, Any]] = {}
    for run in dense_runs:
        dense.setdefault(pair_key(run), run)
    pairs: list[Pair] = []
    used: set[int] = set()
    for r in timed:
        if r.get("model") == "pruned":
            d = dense.get(pair_key(r))
            if d is not None:
                used.add(id(d))
            pairs.append(Pair(r, d))
    return pairs + [Pair(None, run) for run in dense_runs if id(run) not in used]


def ratio_entries(runs: Iterable[dict[str, Any]], flops: Mapping[str, Mapping[str, Any] | None]) -> list[dict[str, Any]]:
    """The "ratios" section: pruned over dense latency of every paired run, beside its graph set's FLOPs ratio."""
    out = []
    for pair in pair_pruned_dense(runs):
        r = pair.pruned
        if r is None or pair.dense is None:
            continue
        f = flops.get(r["graphs"]) or {}
        out.append({"graphs": r["graphs"], "backend": r["backend"], "batch": r["batch"], "mode": r["mode"],
                    "io": r["io"], "cuda_graph": r["cuda_graph"], "latency_ratio_p50": pair.ratio("p50_ms"),
                    "latency_ratio_mean": pair.ratio("mean_ms"), "flops_ratio": f.get("ratio")})
    return out


def check(p: Path, obj: dict[str, Any]) -> None:
    """Refuse another format, or runs without what readers use."""
    fix = jsonfile.fix_for(LATENCY)
    jsonfile.check_format(p, obj, LATENCY)
    jsonfile.need(p, obj, ("runs",), LATENCY.what, LATENCY)
    if not isinstance(obj["runs"], list):
        raise DvitError(f"{p}: 'runs' is not a list: {fix}")
    for i, run in enumerate(obj["runs"]):
        if not isinstance(run, dict):
            raise DvitError(f"{p}: run {i} is not an object: {fix}")
        if "unavailable" in run:  # a backend that could not run: the reason instead of numbers
            jsonfile.need(p, run, ("backend",), f"{LATENCY.what}'s run {i}", LATENCY)
            continue
        jsonfile.need(p, run, ("backend", "model", "batch", "end_to_end"), f"{LATENCY.what}'s run {i}", LATENCY)
        if run["model"] not in ("pruned", "dense"):
            raise DvitError(f"{p}: run {i} has model {run['model']!r}, not 'pruned' or 'dense': {fix}")
        if not isinstance(run["end_to_end"], dict) or "p50_ms" not in run["end_to_end"]:
            raise DvitError(f"{p}: run {i} has no end_to_end p50_ms: {fix}")
    for key in ("ratios", "unavailable", "graph_sets"):
        if not isinstance(obj.get(key) or [], list):
            raise DvitError(f"{p}: {key!r} is not a list: {fix}")


class LatencyResult(jsonfile.JsonResult):
    FMT = LATENCY
    check = staticmethod(check)

    @property
    def runs(self) -> list[dict[str, Any]]:
        return list(self.data["runs"])

    @property
    def machine(self) -> dict[str, Any]:
        return dict(self.data.get("machine") or {})

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.data.get("settings") or {})

    @property
    def flops(self) -> dict[str, Any] | None:
        """FLOPs per image of the first graph set ({"pruned", "dense", "ratio"}), or None."""
        f = self.data.get("flops")
        return f if isinstance(f, dict) else None

    @property
    def graph_sets(self) -> dict[str, dict[str, Any]]:
        """The timed graph sets by directory ({"graphs", "kind", "precision", "model_config", "flops"})."""
        return {str(g.get("graphs")): g for g in self.data.get("graph_sets") or [] if isinstance(g, dict)}

    @property
    def ratios(self) -> list[dict[str, Any]]:
        """The pruned/dense ratios the latency stage computed (by pair_pruned_dense)."""
        return [q for q in self.data.get("ratios") or [] if isinstance(q, dict)]

    @property
    def unavailable(self) -> list[dict[str, Any]]:
        """What could not be timed, with the reason: the file's "unavailable" entries, then such runs."""
        return [*(u for u in self.data.get("unavailable") or [] if isinstance(u, dict)),
                *(r for r in self.data["runs"] if "unavailable" in r)]

    def pairs(self) -> list[Pair]:
        return pair_pruned_dense(self.data["runs"])

    def written_ratio(self, pruned: Mapping[str, Any]) -> dict[str, Any] | None:
        """The "ratios" entry the latency stage wrote for a pruned run, or None."""
        key = tuple(pruned.get(k) for k in RATIO_KEY)
        return next((q for q in self.ratios if tuple(q.get(k) for k in RATIO_KEY) == key), None)
