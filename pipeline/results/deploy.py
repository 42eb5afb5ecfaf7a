"""What `dvit deploy` writes into each results folder: deploy.json, format "dvit-edge/deploy/v1".

The record of one deploy: {"format", "status": "ok"|"failed"|"dry-run", "host", "target", "release",
"results_dir", "steps": [{"name", "status", "reason", "returncode", "seconds", "command", "stderr_tail"}],
"transfer", "facts", "fit", "engines", "power", "validation", "warnings", "seconds", "error", "commands"}
(pipeline/deploy's DeployResult). A thin typed wrapper over the object, so it is written field for field as
the deploy stage writes it; the report does not read it (the folder's out/ holds the validation and latency
results, which it does).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DvitError
from . import jsonfile
from .formats import DEPLOY

FORMAT = DEPLOY.name


def check(p: Path, obj: dict[str, Any]) -> None:
    jsonfile.check_format(p, obj, DEPLOY)
    jsonfile.need(p, obj, ("status", "host", "target", "release", "steps"), DEPLOY.what, DEPLOY)
    if not isinstance(obj["steps"], list) or not all(isinstance(s, dict) and "name" in s and "status" in s
                                                      for s in obj["steps"]):
        raise DvitError(f"{p}: 'steps' is not a list of steps with a name and a status: {jsonfile.fix_for(DEPLOY)}")


class DeployRecord(jsonfile.JsonResult):
    FMT = DEPLOY
    check = staticmethod(check)

    @property
    def status(self) -> str:
        return str(self.data["status"])

    @property
    def host(self) -> str:
        return str(self.data["host"])

    @property
    def target(self) -> str:
        return str(self.data["target"])

    @property
    def release(self) -> str:
        return str(self.data["release"])

    @property
    def steps(self) -> list[dict[str, Any]]:
        return list(self.data["steps"])

    def step(self, name: str) -> dict[str, Any] | None:
        return next((s for s in self.steps if s["name"] == name), None)

    @property
    def validation(self) -> dict[str, Any] | None:
        """The validation summary the deploy took from out/validation.json, or None."""
        return self.data.get("validation")

    @property
    def power(self) -> dict[str, Any] | None:
        return self.data.get("power")
