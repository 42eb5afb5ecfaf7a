"""Plan headers (pipeline/backend/tensorrt/plan_header.py): real TensorRT-RTX plans built here; full TensorRT plans SYNTHESIZED.

No full TensorRT exists on this machine, so its plans cannot be built: the tests marked "synthesized" write bytes
that follow the layout documented in pipeline/backend/tensorrt/plan_header.py (from Netron's reader and NVIDIA's answer in
TensorRT issue #3073), and check only that the reader follows that documented layout.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from rtx_plans import relu_plan

from pipeline import targets
from pipeline.backend.tensorrt import plan_header as ph
from pipeline.errors import DvitError

trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT for RTX is not installed (make setup on x86-64)")
RTX_VERSION = targets.version_tuple(trt.__version__)


def _build(ccs: tuple[int, ...]) -> bytes:
    """A one-Relu engine built by the real TensorRT-RTX builder for `ccs` (default set when empty)."""
    return relu_plan(trt, ccs)


@pytest.fixture(scope="module")
def plans(tmp_path_factory) -> dict[tuple[int, ...], Path]:
    d = tmp_path_factory.mktemp("plans")
    out = {}
    for ccs in [(), (80,), (89, 120), (75, 80, 86, 89, 120, 121)]:
        path = d / f"relu_{'_'.join(map(str, ccs)) or 'default'}.plan"
        path.write_bytes(_build(ccs))
        out[ccs] = path
    return out


def test_real_rtx_plans_carry_the_builder_version_and_targets(plans):
    for ccs, path in plans.items():
        h = ph.read_plan_header(path)
        assert (h.backend, h.tag, h.notes) == ("tensorrt-rtx", "vtrt", ())
        assert h.version == RTX_VERSION  # major, minor, patch and build (1.7.1.116)
        assert h.fields["plan_size"] == path.stat().st_size and h.fields["header_format"] == ph.RTX_HEADER_FORMAT
        if ccs:
            assert h.fields["compute_capabilities"] == list(ccs)
        else:  # the documented default: 8.0, 8.6, 8.9, 12.0 "and later" (one more bit, meaning unpublished)
            assert h.fields["compute_capabilities"][:5] == [80, 86, 89, 120, 121]
        assert f"TensorRT-RTX {trt.__version__}" in h.describe()
        assert json.dumps(h.to_dict())


def test_header_size_agrees_with_the_rtx_runtime():
    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    assert runtime.engine_header_size == ph.HEADER_BYTES


def test_rtx_compatibility_messages(plans):
    h = ph.read_plan_header(plans[(80,)])
    name = plans[(80,)].name
    assert ph.check_compatible(h, "tensorrt-rtx", trt.__version__) is None
    assert ph.check_compatible(h, "tensorrt-rtx", RTX_VERSION) is None
    newer = f"{RTX_VERSION[0]}.{RTX_VERSION[1] + 1}.0.1"
    built = ".".join(map(str, RTX_VERSION[:3]))
    assert ph.check_compatible(h, "tensorrt-rtx", newer) == (
        f"rebuild: {name} was built by TensorRT-RTX {built}, this device runs {newer}")
    msg = ph.check_compatible(h, "tensorrt", "10.3.0.30")
    assert msg and msg.startswith("rebuild:") and "TensorRT 10.3.0.30" in msg and "\n" not in msg


def test_a_changed_version_byte_in_a_real_plan_is_caught(plans, tmp_path):
    data = bytearray(plans[()].read_bytes())
    data[25] += 1  # minor
    path = tmp_path / "edited.plan"
    path.write_bytes(data)
    msg = ph.check_compatible(ph.read_plan_header(path), "tensorrt-rtx", trt.__version__)
    assert msg and msg.startswith("rebuild:") and f"{RTX_VERSION[0]}.{RTX_VERSION[1] + 1}.{RTX_VERSION[2]}" in msg


def test_a_metadata_prefix_is_skipped(plans, tmp_path):
    """Some exporters (Ultralytics) write a u32 length and a JSON object before the plan; Netron skips it too."""
    meta = json.dumps({"model": "dvit", "stride": 16}).encode()
    path = tmp_path / "prefixed.engine"
    path.write_bytes(struct.pack("<I", len(meta)) + meta + plans[(80,)].read_bytes())
    h = ph.read_plan_header(path)
    assert h.backend == "tensorrt-rtx" and h.version == RTX_VERSION
    assert h.fields["prefix_bytes"] == 4 + len(meta) and h.fields["metadata"]["model"] == "dvit"
    assert h.notes == ()  # the plan size still matches: the prefix is not counted


# ---------------------------------------------------------------- full TensorRT: SYNTHESIZED bytes
def _synthesized_trt_plan(tag: bytes, version: tuple[int, int, int], serialization: int = 239,
                          body: int = 4096) -> bytes:
    """SYNTHESIZED, not a real plan: bytes laid out as pipeline/backend/tensorrt/plan_header.py documents for full TensorRT."""
    size = 64 + body
    head = tag + struct.pack("<III", 0, serialization, 0) + struct.pack("<Q", size) + bytes(version) + b"\0"
    return head.ljust(size, b"\0")


@pytest.mark.parametrize("tag", [b"ftrt", b"ptrt"])
def test_synthesized_full_tensorrt_header(tmp_path, tag):
    path = tmp_path / "stage0.plan"
    path.write_bytes(_synthesized_trt_plan(tag, (10, 13, 3)))
    h = ph.read_plan_header(path)
    assert (h.backend, h.version, h.fields["serialization_version"], h.notes) == ("tensorrt", (10, 13, 3), 239, ())
    assert ph.check_compatible(h, "tensorrt", "10.13.3.9") is None
    assert ph.check_compatible(h, "tensorrt", "10.3.0.30") == (
        "rebuild: stage0.plan was built by TensorRT 10.13.3, this device runs 10.3.0.30")
    msg = ph.check_compatible(h, "tensorrt-rtx", trt.__version__)
    assert msg and msg.startswith("rebuild:") and "plans never load across the two" in msg


def test_synthesized_header_without_a_readable_version_says_unknown(tmp_path):
    path = tmp_path / "old.plan"
    path.write_bytes(_synthesized_trt_plan(b"ptrt", (0, 0, 0)))
    h = ph.read_plan_header(path)
    assert h.backend == "tensorrt" and h.version is None and h.version_str == "unknown"
    msg = ph.check_compatible(h, "tensorrt", "10.3.0")
    assert msg and msg.startswith("unknown: cannot read which TensorRT release built old.plan")


def test_files_that_are_not_plans(tmp_path):
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"\x08\x08\x12\x07pytorch" + bytes(64))
    h = ph.read_plan_header(onnx_file)
    assert h.backend is None and h.version is None
    msg = ph.check_compatible(h, "tensorrt", "10.3.0")
    assert msg and msg.startswith("unknown:") and "does not start with a TensorRT plan tag" in msg
    short = tmp_path / "short.plan"
    short.write_bytes(b"ftrt\0\0")
    with pytest.raises(DvitError, match="too short for a TensorRT plan"):
        ph.read_plan_header(short)
    with pytest.raises(DvitError, match="cannot read"):
        ph.read_plan_header(tmp_path / "missing.plan")


class _Collect(trt.ILogger):
    def __init__(self) -> None:
        trt.ILogger.__init__(self)
        self.messages: list[str] = []

    def log(self, severity, msg):
        self.messages.append(msg)


def test_the_rtx_runtime_reads_the_same_tag_at_offset_0(plans):
    """The real runtime checks the tag before it needs a GPU: with "ftrt" written over "vtrt" it names both,
    as little-endian u32 at offset 0 (the version check comes after CUDA starts, so needs a GPU)."""
    data = bytearray(plans[(80,)].read_bytes())
    data[:4] = b"ftrt"
    logger = _Collect()
    assert trt.Runtime(logger).deserialize_cuda_engine(bytes(data)) is None
    text = "\n".join(logger.messages)
    vtrt, ftrt = struct.unpack("<I", b"vtrt")[0], struct.unpack("<I", b"ftrt")[0]
    assert "magicTag" in text and f"({ftrt} != {vtrt})" in text, text
