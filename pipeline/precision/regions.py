"""Graph regions for precision: which nodes belong to which stage, and which must stay FP32.

The pruning decision (every TopK and the prediction module's score path into it) stays FP32 and unquantized:
a flipped keep decision costs more accuracy than any block. In fused graphs, nodes carry their stage in the
"/stage{i}/" name prefix, so a per-stage precision mix is a set of node-name regexes.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Any

from ..onnx_utils import stage_of

PRUNING_NAME_HINT = "score_predictor"
STAGE_RE = re.compile(r"^/stage(\d+)/")

def _namespace(node: Any) -> str:
    return " ".join(p.value for p in node.metadata_props if p.key in ("namespace", "pkg.torch.onnx.name_scopes"))


def pruning_nodes(model: Any) -> list[str]:
    """Names of the nodes that decide which tokens are kept: they stay FP32 and unquantized.

    Every TopK; every node all of whose outputs flow only into those nodes (computed backwards from the
    TopK, so the score path of the prediction module from the token slice onwards, whatever the exporter
    named it); and every node named or namespaced after the prediction modules ("score_predictor").
    """
    g = model.graph
    nodes = list(g.node)
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for t in n.input:
            if t:
                consumers.setdefault(t, []).append(i)
    graph_outputs = {o.name for o in g.output}
    keep = {i for i, n in enumerate(nodes) if n.op_type == "TopK"}
    changed = True
    while changed:
        changed = False
        for i in reversed(range(len(nodes))):
            if i in keep:
                continue
            outs = [t for t in nodes[i].output if t]
            if not outs or any(t in graph_outputs for t in outs):
                continue
            users = [c for t in outs for c in consumers.get(t, [])]
            if users and all(c in keep for c in users):
                keep.add(i)
                changed = True
    for i, n in enumerate(nodes):
        if PRUNING_NAME_HINT in n.name or PRUNING_NAME_HINT in _namespace(n):
            keep.add(i)
    return [nodes[i].name for i in sorted(keep)]


def boundary_producers(model: Any) -> list[str]:
    """Nodes of a fused graph whose outputs feed another stage: the stage graphs' output layers.

    ModelOpt never quantizes a layer producing a graph output, so in the stage graphs the last residual Add of
    each stage stays unquantized; excluding the same nodes in the fused graph gives it the stage chain's
    Q/DQ placement (and, with the same calibration data, the same scales).
    """
    producer = {t: n.name for n in model.graph.node for t in n.output}
    out: set[str] = set()
    for n in model.graph.node:
        s = stage_of(n.name)
        if s is None:
            continue
        for t in n.input:
            p = producer.get(t)
            if p is not None and stage_of(p) not in (None, s):
                out.add(p)
    return sorted(out)


def exact(names: list[str]) -> list[str]:
    """Regexes matching exactly these node names (ModelOpt's node filters are regexes, matched with re.match)."""
    return [re.escape(n) + "$" for n in names]


def not_in_stages(stages: list[int]) -> str:
    """A regex matching every node name outside the given "/stage{i}/" prefixes."""
    alt = "|".join(str(s) for s in sorted(stages))
    return rf"^(?!/stage(?:{alt})/)"


def restage_names(model: Any, original: set[str]) -> int:
    """Give the nodes ModelOpt/AutoCast inserted (Q/DQ, Cast: those not in `original`) the "/stage{i}/" prefix
    of the stage they serve: that of their consumers, else of their producers. Their own names derive from
    tensor names, which carry the producing stage's prefix: a Cast feeding stage 3 from stage 2 would otherwise
    count as stage 2's. Returns how many nodes were renamed."""
    g = model.graph
    nodes = list(g.node)
    if not any(stage_of(n.name) is not None for n in nodes):
        return 0  # a stage graph: no prefixes to keep
    producer: dict[str, int] = {t: i for i, n in enumerate(nodes) for t in n.output if t}
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for t in n.input:
            consumers.setdefault(t, []).append(i)
    stage: dict[int, int | None] = {
        i: (stage_of(n.name) if n.name in original else None) for i, n in enumerate(nodes)
    }
    pending = [i for i, n in enumerate(nodes) if n.name not in original]
    # Consumers first, through chains of inserted nodes (a Q feeding a DQ feeding stage 3 serves stage 3);
    # producers only for what has no staged consumer at all.
    for direction in ("down", "up"):
        while pending:
            resolved = []
            for i in pending:
                if direction == "down":
                    near = [stage[c] for t in nodes[i].output for c in consumers.get(t, [])]
                else:
                    near = [stage[producer[t]] for t in nodes[i].input if t in producer]
                found = next((s for s in near if s is not None), None)
                if found is not None:
                    stage[i] = found
                    resolved.append(i)
            if not resolved:
                break
            pending = [i for i in pending if stage[i] is None]
    renamed = 0
    for i, n in enumerate(nodes):
        if n.name in original or stage[i] is None:
            continue
        base = STAGE_RE.sub("", n.name).lstrip("/") or f"{n.op_type}_{i}"
        new = f"/stage{stage[i]}/{base}"
        if new != n.name:
            n.name = new
            renamed += 1
    return renamed


def tensor_types(model: Any) -> dict[str, int]:
    """Element type of every typed tensor (inputs, outputs, initializers, inferred intermediates)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, RuntimeError):
        # best effort: an untyped tensor just counts as unknown
        inferred = model
    g = inferred.graph
    types: dict[str, int] = {}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
    return types


def graph_summary(model: Any, default_stage: int | None = None) -> dict[str, dict[str, int]]:
    """Per stage ("/stage{i}/" prefix, or default_stage for a stage graph): Q/DQ, FP16/FP32 Casts and the
    nodes computing in FP16 (a float input or output typed FP16)."""
    from onnx import TensorProto

    types = tensor_types(model)
    out: dict[str, Counter[str]] = {}
    for n in model.graph.node:
        s = stage_of(n.name)
        key = str(s if s is not None else default_stage if default_stage is not None else "none")
        c = out.setdefault(key, Counter())
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            c[n.op_type] += 1
        elif n.op_type == "Cast":
            to = next((a.i for a in n.attribute if a.name == "to"), None)
            if to == TensorProto.FLOAT16:
                c["cast_to_fp16"] += 1
            elif to == TensorProto.FLOAT:
                c["cast_to_fp32"] += 1
        elif any(types.get(t) == TensorProto.FLOAT16 for t in list(n.input) + list(n.output) if t):
            c["fp16_nodes"] += 1
        c["nodes"] += 1
    return {k: dict(v) for k, v in sorted(out.items())}


def bypass_qdq(model: Any, names: list[str]) -> int:
    """Feed the nodes `names` the FP32 tensor a Q/DQ pair was put on, instead of its DequantizeLinear output.

    A tensor read both by a quantized layer and by the pruning decision gets one Q/DQ pair, which every reader
    then sees: the spatial families' predictors read the very map the next block's depthwise convolution
    quantizes (token pruning's predictors read a slice of the tokens, a tensor of their own). Exclusion by node
    name cannot prevent that; rewiring the decision's inputs keeps it FP32. Returns how many inputs were rewired."""
    producer = {o: n for n in model.graph.node for o in n.output}
    wanted = set(names)
    rewired = 0
    for n in model.graph.node:
        if n.name not in wanted:
            continue
        for i, t in enumerate(n.input):
            dq = producer.get(t)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                n.input[i] = q.input[0]
                rewired += 1
    return rewired


def fp32_violations(model: Any, names: list[str]) -> list[str]:
    """Those of `names` that are quantized or compute in FP16 (feed on a Q/DQ output or an FP16 tensor)."""
    from onnx import TensorProto

    types = tensor_types(model)
    by_name = {n.name: n for n in model.graph.node}
    dq_out = {t for n in model.graph.node if n.op_type == "DequantizeLinear" for t in n.output}
    bad = []
    for name in names:
        n = by_name.get(name)
        if n is None:
            continue
        ts = [t for t in list(n.input) + list(n.output) if t]
        if any(types.get(t) == TensorProto.FLOAT16 for t in ts) or any(t in dq_out for t in n.input):
            bad.append(name)
    return bad



def fp32_in_fp16_region(model: Any, fp16_stages: list[int] | None, protected: set[str]) -> list[str]:
    """Nodes of the FP16 region that AutoCast kept FP32 beyond the ones we excluded (overflow screening)."""
    from onnx import TensorProto

    types = tensor_types(model)
    kept = []
    for n in model.graph.node:
        if n.name in protected or n.op_type in ("Cast", "Constant", "QuantizeLinear", "DequantizeLinear"):
            continue
        if fp16_stages is not None and stage_of(n.name) not in fp16_stages:
            continue
        ts = [types.get(t) for t in list(n.input) + list(n.output) if t]
        if TensorProto.FLOAT in ts and TensorProto.FLOAT16 not in ts:
            kept.append(n.name)
    return kept


BLOCK_RE = re.compile(r"/blocks\.(\d+)/")


def stage_teacher_names(model: Any, pruning_loc: tuple[int, ...] | list[int]) -> int:
    """Prefix the dense teacher's nodes with the student stage their blocks belong to ("/stage2/blocks.5/..").

    The teacher is then converted by the fused graph's recipe: a per-stage mix such as fp16,int8,int8,fp16 puts
    the same precision on the same blocks in both models, so that pruned and dense engines compare like for
    like. Nodes outside the blocks belong to stage 0 before the first block (patch embedding) and to the last stage
    after it (norm, head). Returns how many nodes were renamed.
    """
    edges = [0, *pruning_loc]
    last = len(edges) - 1
    seen_block = False
    renamed = 0
    for n in model.graph.node:
        if stage_of(n.name) is not None:
            continue
        m = BLOCK_RE.search(n.name)
        if m:
            seen_block = True
            block = int(m.group(1))
            stage = max(i for i, e in enumerate(edges) if block >= e)
        else:
            stage = last if seen_block else 0
        n.name = f"/stage{stage}/{n.name.lstrip('/')}"
        renamed += 1
    return renamed