"""Atomic artifact writing: a crash or a bad input never leaves a half-written file or directory behind."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import DvitError

# Errors that say the destination cannot take the bytes, whatever file the OSError names.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def write_error(path: str | os.PathLike[str], e: OSError, hint: str = "choose a writable --out") -> DvitError:
    """One line naming the destination and the cause: "cannot write /proc/x: No such file or directory (errno
    ENOENT): choose a writable --out". A FileExistsError from creating a parent means a component is a file."""
    name = errno.errorcode.get(e.errno, str(e.errno)) if e.errno is not None else None
    cause, detail = e.strerror or str(e) or type(e).__name__, ""
    if isinstance(e, FileExistsError) and e.filename is not None and not Path(e.filename).is_dir():
        cause, name, detail = os.strerror(errno.ENOTDIR), "ENOTDIR", f"{e.filename} is a file; "
    elif e.filename is not None and os.fspath(e.filename) != os.fspath(path):
        detail = f"at {os.fsdecode(e.filename)}; "
    code = f"errno {name}" if name else type(e).__name__
    return DvitError(f"cannot write {os.fspath(path)}: {cause} ({detail}{code}): {hint}")


def _within(filename: object, *roots: Path) -> bool:
    if not isinstance(filename, (str, bytes, os.PathLike)):
        return False
    f = os.path.abspath(os.fsdecode(filename))
    return any(f == str(r) or f.startswith(str(r) + os.sep) for r in (x.absolute() for x in roots))


def ensure_writable_dir(path: Path, dest: Path | None = None, hint: str = "choose a writable --out") -> None:
    """Create `path` and its parents, failing with one line (naming `dest`, the file or directory that was to be
    written there, when given) when it cannot be written."""
    dest = dest if dest is not None else path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(dest, e, hint) from e
    if not os.access(path, os.W_OK):
        raise DvitError(f"cannot write {dest}: {path} is not writable (errno EACCES): {hint}")


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object],
                 hint: str = "choose a writable location") -> Path:
    """Call write(tmp_path) and move the result onto `path` only if it succeeded. An OSError creating, writing or
    moving the file becomes one DvitError naming `path` and the cause; one about another file (an input
    `write` reads) passes through unchanged."""
    path = Path(path)
    ensure_writable_dir(path.parent, path, hint)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; artifacts get the usual permissions
    except OSError as e:
        raise write_error(path, e, hint) from e
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if e.filename is None or e.errno in WRITE_ERRNOS or _within(e.filename, Path(tmp), path):
            raise write_error(path, e, hint) from e
        raise
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], overwrite: bool = True, hint: str = "choose a writable --out") -> Iterator[Path]:
    """Build a directory under a temporary name beside `path`; it replaces `path` only on success.

    An OSError creating or moving it, or one the body meets writing into it (a file under the temporary
    directory, a full disk), becomes one DvitError naming `path` and the cause; others pass through unchanged."""
    path = Path(path)
    ensure_writable_dir(path.parent, path, hint)
    if path.exists() and not overwrite:
        raise DvitError(f"{path} already exists: remove it or pass --overwrite")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as e:
        raise write_error(path, e, hint) from e
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        yield tmp
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in WRITE_ERRNOS or _within(e.filename, tmp) or _within(getattr(e, "filename2", None), tmp):
            raise write_error(path, e, hint) from e
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f".{path.name}.old") if path.exists() else None
    try:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and old.exists() and not path.exists():
            with contextlib.suppress(OSError):
                os.replace(old, path)  # the previous output stays where it was
        if isinstance(e, OSError):
            raise write_error(path, e, hint) from e
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
