"""The engine cache: a built plan is reused only when everything that decides its bytes is the same.

Content-addressed: `<key>.plan` and `<key>.json` (what the key was made of, the plan's sha256, how long the build
took), where key = sha256 of (graph hash, plugin library hash, backend and exact version, target, compute
capabilities, builder settings as JSON with enum names). A lookup re-hashes the cached plan and treats anything
that does not match its record as absent, so a damaged or foreign entry is rebuilt, never used. Entries are
written plan first, record last, each atomically: a record exists only beside a complete plan.

The TensorRT timing cache (kernel timings, full TensorRT only) lives here too, one file per backend version and
GPU, read and merged under an fcntl lock so that concurrent builds sharing the folder never lose each other's
timings.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import atomic_write, atomic_write_json, ensure_writable_dir, sha256_file

FORMAT = "dvit-edge/engine-cache/v1"
DEFAULT_DIR = Path("artifacts/engine-cache")
LOCK_NAME = "timing-cache.lock"


def cache_key(parts: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of `parts` (with the cache format, so a format change never reuses)."""
    text = json.dumps({"format": FORMAT, **parts}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Hit:
    plan: Path
    record: dict[str, Any]


class EngineCache:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def plan_path(self, key: str) -> Path:
        return self.root / f"{key}.plan"

    def record_path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def lookup(self, key: str, parts: dict[str, Any]) -> tuple[Hit | None, str | None]:
        """(the entry, None) when a verified plan is cached for `key`; (None, why it was not used) otherwise,
        why being None when there simply is no entry."""
        record_file, plan = self.record_path(key), self.plan_path(key)
        if not record_file.is_file():
            return None, None
        try:
            record = json.loads(record_file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None, f"cache record {record_file.name} is unreadable: rebuilt"
        if not isinstance(record, dict) or record.get("format") != FORMAT or record.get("key") != key \
                or record.get("parts") != json.loads(json.dumps(parts)):
            return None, f"cache record {record_file.name} does not describe this build: rebuilt"
        if not plan.is_file() or sha256_file(plan) != record.get("plan_sha256"):
            return None, f"cached plan {plan.name} is missing or does not match its record: rebuilt"
        return Hit(plan, record), None

    def store(self, key: str, parts: dict[str, Any], plan: Path, build_seconds: float) -> None:
        ensure_writable_dir(self.root)
        atomic_write(self.plan_path(key), lambda tmp: shutil.copyfile(plan, tmp))
        atomic_write_json(self.record_path(key), {
            "format": FORMAT, "key": key, "parts": parts, "plan_sha256": sha256_file(self.plan_path(key)),
            "bytes": plan.stat().st_size, "build_seconds": round(build_seconds, 3),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        })

    # ------------------------------------------------------------------------------------------ timing cache
    def timing_cache_path(self, backend: str, version: str, sms: list[int]) -> Path:
        """One file per backend version and GPU: timings measured on one GPU say nothing about another."""
        name = f"{backend}-{version}-sm{'_'.join(map(str, sms))}"
        return self.root / f"timing-{re.sub(r'[^A-Za-z0-9._-]', '_', name)}.cache"

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """An exclusive lock on the folder's timing cache, across processes."""
        ensure_writable_dir(self.root)
        with open(self.root / LOCK_NAME, "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
