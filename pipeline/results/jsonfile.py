"""Reading and writing a result's JSON: one object of one format, refused in one line that names the fix."""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ..errors import DvitError
from ..io import atomic_write_json
from .formats import ResultFormat, by_name


class WrongFormat(DvitError):
    """A JSON object of another format than the reader's; `found` is the known format it holds, if any."""

    def __init__(self, message: str, path: Path, found: ResultFormat | None) -> None:
        super().__init__(message)
        self.path = path
        self.found = found


def fix_for(fmt: ResultFormat) -> str:
    return f"re-run '{fmt.written_by}'"


def read(path: str | os.PathLike[str], fmt: ResultFormat) -> tuple[Path, dict[str, Any], str]:
    """(path, the JSON object, sha256 of the bytes read) of a file of format `fmt`."""
    p = Path(path)
    fix = fix_for(fmt)
    if not p.is_file():
        raise DvitError(f"{fmt.what} {p} not found: {fix}")
    try:
        raw = p.read_bytes()
        obj = json.loads(raw)
    except (OSError, ValueError) as e:  # ValueError: JSONDecodeError and UnicodeDecodeError
        raise DvitError(f"{p} is not a readable JSON file ({e}): {fix}") from e
    if not isinstance(obj, dict):
        raise DvitError(f"{p} is not a {fmt.what} (a JSON {type(obj).__name__}, not an object): {fix}")
    check_format(p, obj, fmt)
    return p, obj, hashlib.sha256(raw).hexdigest()


def check_format(p: Path, obj: dict[str, Any], fmt: ResultFormat) -> None:
    got = obj.get("format")
    if got == fmt.name:
        return
    found = by_name(got)
    if found is not None and found.family != fmt.family:
        msg = f"{p} is a {found.what}, not a {fmt.what}: pass what '{fmt.written_by}' writes"
    elif found is not None:
        msg = f"{p} is a {fmt.what} of format {got}, this version reads {fmt.name}: {fix_for(fmt)}"
    else:
        msg = f"{p} is not a dvit {fmt.what} (format {got!r}, expected {fmt.name}): {fix_for(fmt)}"
    raise WrongFormat(msg, p, found)


def need(p: Path, obj: dict[str, Any], keys: Sequence[str], what: str, fmt: ResultFormat) -> None:
    """Refuse an object without `keys` (a truncated or hand-edited result)."""
    missing = [k for k in keys if k not in obj]
    if missing:
        raise DvitError(f"{p} is a {what} without {', '.join(repr(k) for k in missing)} (truncated or hand-edited?): "
                        f"{fix_for(fmt)}")


def write(path: str | os.PathLike[str], obj: dict[str, Any], check: Callable[[Path, dict[str, Any]], None]) -> Path:
    """The JSON every stage writes (sorted keys, indent 2, a final newline), atomically; `check` is the reader's
    own check, so that a stage never writes a result its reader refuses."""
    try:
        check(Path(path), obj)
    except DvitError as e:
        raise ValueError(f"internal: refusing to write a result that would not read back: {e}") from e
    return atomic_write_json(path, obj)


R = TypeVar("R", bound="JsonResult")


@dataclass(frozen=True)
class JsonResult:
    """A result file: the JSON object as written, where it was read from and the sha256 of the bytes read.
    A kind of result names its format (FMT) and its reader's check (`check(path, obj)`, one line on refusal)."""

    data: dict[str, Any]  # the JSON object as written
    path: Path | None = None  # where it was read from
    sha256: str | None = None  # of the bytes read

    FMT: ClassVar[ResultFormat]

    @staticmethod
    def check(p: Path, obj: dict[str, Any]) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls: type[R], path: str | os.PathLike[str]) -> R:  # noqa: PYI019 (typing.Self: Python 3.11+)
        p, obj, sha = read(path, cls.FMT)
        cls.check(p, obj)
        return cls(obj, p, sha)

    def save(self, path: str | os.PathLike[str]) -> Path:
        return write(path, self.data, type(self).check)
