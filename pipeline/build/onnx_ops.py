"""The operators an ONNX file holds, read from its protobuf bytes with the standard library alone.

The placement rule (placement.py) decides from a graph's op types, and the build runs on a Jetson whose Python has
neither `onnx` nor protobuf (README: "What a device needs"; the `device` extra is numpy only). An op type is two
strings of a NodeProto, so this reads the protobuf wire format directly: it walks ModelProto.graph, the subgraphs
held in node attributes (If, Loop, Scan bodies) and the model's local functions, and skips every other field by
its length (initializers included, so a large graph costs little more than its nodes). Field numbers are those of
onnx/onnx.proto (tests/test_dla_placement.py checks the reader against `onnx` on real graphs).
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from ..errors import DvitError

# onnx.proto field numbers
MODEL_GRAPH, MODEL_FUNCTIONS = 7, 25
GRAPH_NODE = 1
NODE_OP_TYPE, NODE_ATTRIBUTE, NODE_DOMAIN = 4, 5, 7
ATTRIBUTE_G, ATTRIBUTE_GRAPHS = 6, 11
FUNCTION_NODE = 7
# wire types
VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5

OpCounts = Counter[tuple[str, str]]  # (domain, op type) -> nodes; "" is the default ONNX domain


class _Malformed(ValueError):
    pass


def graph_ops(path: str | os.PathLike[str]) -> OpCounts:
    """How many nodes of each (domain, op type) the ONNX file at `path` holds, subgraphs and functions included."""
    path = Path(path)
    try:
        data = memoryview(path.read_bytes())
    except OSError as e:
        raise DvitError(f"cannot read ONNX file {path} ({e.strerror}): re-run the stage that wrote it") from e
    ops: OpCounts = Counter()
    try:
        for number, value in _fields(data):
            if number == MODEL_GRAPH:
                _graph(_message(value), ops)
            elif number == MODEL_FUNCTIONS:
                _nodes(_message(value), FUNCTION_NODE, ops)
    except (_Malformed, IndexError, UnicodeDecodeError) as e:
        raise DvitError(f"{path} is not a readable ONNX model ({e or 'truncated'}): re-export it") from e
    return ops


def _graph(graph: memoryview, ops: OpCounts) -> None:
    _nodes(graph, GRAPH_NODE, ops)


def _nodes(message: memoryview, node_field: int, ops: OpCounts) -> None:
    """Count the NodeProtos in field `node_field` of a GraphProto or FunctionProto."""
    for number, value in _fields(message):
        if number == node_field:
            _node(_message(value), ops)


def _node(node: memoryview, ops: OpCounts) -> None:
    domain = op_type = ""
    for number, value in _fields(node):
        if number == NODE_OP_TYPE:
            op_type = bytes(_message(value)).decode()
        elif number == NODE_DOMAIN:
            domain = bytes(_message(value)).decode()
        elif number == NODE_ATTRIBUTE:
            _attribute(_message(value), ops)
    ops[(domain, op_type)] += 1


def _attribute(attribute: memoryview, ops: OpCounts) -> None:
    """The subgraphs an attribute holds (a control-flow node's bodies) count as the node's graph's own ops."""
    for number, value in _fields(attribute):
        if number in (ATTRIBUTE_G, ATTRIBUTE_GRAPHS):
            _graph(_message(value), ops)


def _message(value: memoryview | int) -> memoryview:
    if isinstance(value, int):
        raise _Malformed("a message field is encoded as a number")
    return value


def _fields(buf: memoryview) -> Iterator[tuple[int, memoryview | int]]:
    """(field number, value) of each field of one message: varints as ints, length-delimited fields as views
    (nested messages, strings, packed arrays), fixed-width numbers skipped."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = _varint(buf, pos)
            yield number, value
        elif wire == LENGTH:
            size, pos = _varint(buf, pos)
            if pos + size > end:
                raise _Malformed(f"field {number} runs past the end of its message")
            yield number, buf[pos: pos + size]
            pos += size
        elif wire in (FIXED64, FIXED32):
            pos += 8 if wire == FIXED64 else 4
        else:
            raise _Malformed(f"wire type {wire} of field {number} is not one ONNX uses")
    if pos != end:
        raise _Malformed("a fixed-width field runs past the end of its message")


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """The base-128 varint at `pos` and the position after it."""
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise _Malformed("a varint is longer than 10 bytes")
