"""The result formats, each with what it is called and the command that writes it (for one-line refusals)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResultFormat:
    name: str  # the JSON's "format" value, e.g. "dvit-edge/validation/v2"
    what: str  # how an error names it: "validation result"
    written_by: str  # the command that writes it

    @property
    def family(self) -> str:
        """The name without its version: "dvit-edge/validation"."""
        return self.name.rsplit("/", 1)[0]


VALIDATION = ResultFormat("dvit-edge/validation/v2", "validation result", "dvit validate --graphs DIR --json OUT.json")
LATENCY = ResultFormat("dvit-edge/latency/v1", "latency result", "dvit latency --graphs DIR --json OUT.json")
REFERENCE = ResultFormat("dvit-edge/reference/v1", "recorded reference", "dvit reference --graphs DIR --out REF.npz")
DEPLOY = ResultFormat("dvit-edge/deploy/v1", "deploy record", "dvit deploy --graphs DIR --target T --host H")
ALL = (VALIDATION, LATENCY, REFERENCE, DEPLOY)


def by_name(name: object) -> ResultFormat | None:
    """The known result format a "format" value belongs to (any version of it), or None."""
    if not isinstance(name, str):
        return None
    return next((f for f in ALL if name == f.name or name.startswith(f.family + "/")), None)
