"""Which TensorRT built a serialized plan, read from its first bytes without deserializing it.

A plan loads only into the TensorRT (or TensorRT-RTX) release that built it; deserializing a foreign one fails
with "Version tag does not match" deep inside the runtime, or needs a GPU at all. `dvit inspect` reads the
header instead and says what to do before any load is tried. Only the standard library is used.

Header layout (little-endian). Sources: [N] Netron's TensorRT reader (github.com/lutzroeder/netron,
source/tensorrt.js: tags "ptrt"/"ftrt", size at 16); [V] NVIDIA's answer in github.com/NVIDIA/TensorRT issue
#3073 (comment 1599934548), as used by Autoware's tensorrt_common (TRT_MAJOR_IDX = 24, TRT_MINOR_IDX = 25,
TRT_PATCH_IDX = 26); [S] TensorRT issues quoting "Serialized Engine Version: 232/236/239" next to a plan's 9th
byte; [O] observed here on plans built by TensorRT-RTX 1.7.1.116 (tests/test_plan_header.py builds them).

    offset size  TensorRT (tag ftrt / ptrt)             TensorRT-RTX (tag vtrt)
    0      4     tag [N]                                tag "vtrt" [O]
    8      4     serialization version, u32 [S]         header format, u32: 2 [O]
    16     8     plan size, u64 [N]                     plan size in bytes, u64 [O]
    24     3     major, minor, patch, one byte each [V] major, minor, patch [O]
    27     1     (not documented: not read)             build number (116 for 1.7.1.116) [O]
    28     4     -                                      "vtrt" again [O]
    32     4     -                                      compute capabilities, one bit each in ComputeCapability
                                                        order: SM75, SM80, SM86, SM89, SM120, SM121; a default
                                                        build also sets bit 6 [O, format 2 only]
    RTX: Runtime.engine_header_size is 64. The RTX runtime reads the tag at 0 as a u32 and, given "ftrt",
    rejects the plan naming both tags ("incompatible serialization version (1953657958 != 1953657974)").

Full TensorRT plans cannot be built on this machine (no GPU, no TensorRT): their layout above comes from the
sources named, and the tests check it on synthesized bytes only. The version bytes are trusted only where
they read as a TensorRT >= 8 version; otherwise the version is reported unknown, never guessed. A metadata
prefix (u32 length + JSON, as Ultralytics writes before the plan; Netron skips it the same way) is skipped.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ...errors import DvitError
from ...targets import backend_label, version_tuple

TAGS = {b"ftrt": "tensorrt", b"ptrt": "tensorrt", b"vtrt": "tensorrt-rtx"}
HEADER_BYTES = 64
RTX_HEADER_FORMAT = 2  # the only TensorRT-RTX header format observed (1.7.1)
RTX_CC_BITS = (75, 80, 86, 89, 120, 121)
PLAUSIBLE_MAJOR = {"tensorrt": range(8, 100), "tensorrt-rtx": range(1, 100)}
MAX_PREFIX = 1 << 20


@dataclass(frozen=True)
class PlanHeader:
    path: str
    backend: str | None  # "tensorrt", "tensorrt-rtx", or None when the tag is not a plan tag
    tag: str
    version: tuple[int, ...] | None  # (major, minor, patch) for TensorRT, plus build for TensorRT-RTX
    fields: dict[str, Any] = field(default_factory=dict)  # raw header fields, by name
    notes: tuple[str, ...] = ()

    @property
    def version_str(self) -> str:
        return ".".join(map(str, self.version)) if self.version else "unknown"

    @property
    def label(self) -> str:
        return f"{backend_label(self.backend)} {self.version_str}" if self.backend else "an unknown producer"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["version"] = self.version_str
        return d

    def describe(self) -> str:
        """One line for `dvit inspect`."""
        extra = []
        if ccs := self.fields.get("compute_capabilities"):
            extra.append("for " + ", ".join(f"sm_{c}" if isinstance(c, int) else str(c) for c in ccs))
        if "plan_size" in self.fields:
            extra.append(f"{self.fields['plan_size']} bytes")
        more = f" ({'; '.join(extra)})" if extra else ""
        return f"{self.path}: plan built by {self.label}{more}"


def read_plan_header(path: str | os.PathLike[str]) -> PlanHeader:
    """Parse the header of the plan file at `path`; a file too short to be a plan is an error."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(8)
            offset, metadata = _metadata_prefix(f, head, p.stat().st_size)
            f.seek(offset)
            data = f.read(HEADER_BYTES)
        file_size = p.stat().st_size
    except OSError as e:
        raise DvitError(f"cannot read {p} ({e.strerror}): pass a serialized TensorRT engine") from e
    if len(data) < 28:
        raise DvitError(f"{p} is {file_size} bytes, too short for a TensorRT plan: pass a serialized engine")
    return parse_header(data, str(p), file_size - offset, offset, metadata)


def _metadata_prefix(f: Any, head: bytes, size: int) -> tuple[int, dict[str, Any] | None]:
    """(offset of the plan, metadata) when the file starts with a u32 length and a JSON object."""
    if len(head) < 5 or head[:4] in TAGS or head[4:5] != b"{":
        return 0, None
    (n,) = struct.unpack_from("<I", head)
    if not 0 < n <= min(MAX_PREFIX, size - 4 - 28):
        return 0, None
    f.seek(4)
    try:
        meta = json.loads(f.read(n))
    except ValueError:
        return 0, None
    return 4 + n, meta if isinstance(meta, dict) else {"value": meta}


def parse_header(data: bytes, path: str = "<bytes>", plan_size: int | None = None, offset: int = 0,
                 metadata: dict[str, Any] | None = None) -> PlanHeader:
    """Parse header bytes (the first 28..64 bytes of a plan); `plan_size` is the plan's length when known."""
    tag_bytes = bytes(data[:4])
    tag = tag_bytes.decode("ascii", "backslashreplace")
    backend = TAGS.get(tag_bytes)
    fields: dict[str, Any] = {}
    notes: list[str] = []
    if offset:
        fields["prefix_bytes"] = offset
        fields["metadata"] = metadata
    if backend is None:
        known = ", ".join(t.decode() for t in TAGS)
        return PlanHeader(path, None, tag, None, fields, (f"tag {tag!r} is not one of {known}",))
    fields["serialization_version"] = struct.unpack_from("<I", data, 8)[0]
    size = struct.unpack_from("<Q", data, 16)[0]
    fields["plan_size"] = size
    if plan_size is not None and size != plan_size:
        notes.append(f"header says {size} bytes, the file holds {plan_size}")
    major, minor, patch = data[24], data[25], data[26]
    version: tuple[int, ...] | None = (major, minor, patch)
    if major not in PLAUSIBLE_MAJOR[backend]:
        notes.append(f"bytes 24-26 ({major}.{minor}.{patch}) do not read as a {backend_label(backend)} version")
        version = None
    if backend == "tensorrt-rtx":
        fields["header_format"] = fields.pop("serialization_version")
        if version is not None:
            version = (*version, data[27])
        if fields["header_format"] != RTX_HEADER_FORMAT:
            notes.append(f"TensorRT-RTX header format {fields['header_format']} has not been seen before "
                         f"(known: {RTX_HEADER_FORMAT}); version bytes read at the same place")
        elif len(data) >= 36 and data[28:32] == b"vtrt":
            mask = struct.unpack_from("<I", data, 32)[0]
            fields["cc_mask"] = mask
            fields["compute_capabilities"] = [sm for bit, sm in enumerate(RTX_CC_BITS) if mask >> bit & 1] + [
                f"bit{bit}" for bit in range(len(RTX_CC_BITS), 32) if mask >> bit & 1]
    return PlanHeader(path, backend, tag, version, fields, tuple(notes))


def check_compatible(header: PlanHeader, installed_backend: str,
                     installed_version: str | tuple[int, ...]) -> str | None:
    """None when the plan should load into the installed backend, else the one line a user needs first.

    Messages start with "rebuild:" when the plan cannot load here, or "unknown:" when the header does not say
    which release built it (the load may still fail).
    """
    name = Path(header.path).name
    have = ".".join(map(str, installed_version)) if isinstance(installed_version, tuple) else str(installed_version)
    here = f"{backend_label(installed_backend)} {have}"
    if header.backend is None:
        return (f"unknown: {name} does not start with a TensorRT plan tag (found {header.tag!r}): "
                f"pass an engine built by `dvit build`, or rebuild it with {here}")
    if header.backend != installed_backend:
        return (f"rebuild: {name} was built by {header.label}, this machine runs {here} (plans never load "
                "across the two): rebuild it here, or load it where that backend is installed")
    if header.version is None:
        return (f"unknown: cannot read which {backend_label(header.backend)} release built {name} "
                f"({'; '.join(header.notes)}); if loading fails, rebuild it with {here}")
    built = header.version[:3]
    if built != version_tuple(have)[:3]:
        built_str = ".".join(map(str, built))
        return f"rebuild: {name} was built by {backend_label(header.backend)} {built_str}, this device runs {have}"
    return None
