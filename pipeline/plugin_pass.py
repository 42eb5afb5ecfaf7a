"""`dvit plugin-pass`: replace each TopK + gather pruning pattern by one DvitTopKGather plugin node.

The exporter writes token selection as TopK(scores, k) -> index arithmetic (prepend the class token's row 0, shift
the patch indices by one, broadcast over channels) -> GatherElements(tokens, rows). This pass finds exactly that
(onnx-graphsurgeon), proves each candidate's index arithmetic does what the plugin does by evaluating it on test
indices (onnx.reference), and rewrites it to

    DvitTopKGather(scores, tokens) -> kept_tokens [B,k+1,C], kept_indices [B,k] int32  (+ Cast to int64 where needed)

How TensorRT finds the plugin: its ONNX parser imports any op type without a built-in importer through its
fallback plugin importer, which looks the creator up by op type, the `plugin_version` attribute (default "1") and
the `plugin_namespace` attribute (default ""); since 10.10 it retries with the node's domain as the namespace. The
nodes therefore carry plugin_version="1", plugin_namespace="dvit" and domain "dvit" (declared in opset_import), and
`k` as an INT attribute, which the parser hands to the creator as the plugin field "k".
"""
from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from . import onnx_utils
from .backend import graph_runners
from .backend.onnxruntime.runner import run as run_onnx
from .errors import DvitError
from .graphset import GraphEntry, GraphSet, batch_section, write_graph_set
from .io import atomic_dir
from .manifest import file_entry
from .topk_gather_ref import PLUGIN_DOMAIN, PLUGIN_NAMESPACE, PLUGIN_OP, PLUGIN_VERSION, topk_gather

# Operators that may sit between TopK's indices and the gather ("index arithmetic"), with constant other inputs.
INDEX_OPS = frozenset({"Add", "Sub", "Mul", "Concat", "Unsqueeze", "Squeeze", "Reshape", "Expand", "Cast",
                       "Identity", "Tile", "Flatten"})
GATHER_OPS = frozenset({"GatherElements", "Gather", "GatherND"})


@dataclass
class Match:
    topk: Any  # gs.Node
    gather: Any  # gs.Node
    chain: list[Any]  # the index-arithmetic nodes between them
    k: int
    scores: Any  # gs.Variable [B, N]
    tokens: Any  # gs.Variable [B, N+1, C]


# ---- finding the pattern ----
def _attr(node: Any, name: str, default: Any) -> Any:
    return node.attrs.get(name, default)


def _constant_value(t: Any) -> np.ndarray | None:
    import onnx_graphsurgeon as gs  # type: ignore[import-untyped]

    if isinstance(t, gs.Constant):
        return np.asarray(t.values)
    if len(t.inputs) == 1 and t.inputs[0].op == "Constant":
        v = t.inputs[0].attrs.get("value")
        return np.asarray(v.values) if isinstance(v, gs.Constant) else None
    return None


def _static(t: Any) -> list[int] | None:
    shape = getattr(t, "shape", None)
    return [int(d) for d in shape] if shape is not None and all(isinstance(d, int) for d in shape) else None


def _match(topk: Any, graph: Any) -> Match | None:
    """The pattern rooted at one TopK, or None when this TopK is not a token selection the plugin can replace."""
    if len(topk.inputs) < 2 or len(topk.outputs) != 2:
        return None
    scores, values, indices = topk.inputs[0], topk.outputs[0], topk.outputs[1]
    kv = _constant_value(topk.inputs[1])
    s_shape = _static(scores)
    if kv is None or kv.size != 1 or s_shape is None or len(s_shape) != 2:
        return None
    if _attr(topk, "axis", -1) not in (1, -1) or _attr(topk, "largest", 1) != 1 or _attr(topk, "sorted", 1) != 1:
        return None
    if values.outputs or values in graph.outputs:
        return None  # the scores themselves are used: not the plugin's contract
    k = int(kv.reshape(-1)[0])
    reached: set[int] = {id(indices)}
    chain: list[Any] = []
    gathers: list[Any] = []
    frontier: list[Any] = [indices]
    while frontier:
        t = frontier.pop()
        for c in list(t.outputs):
            if c.op in GATHER_OPS and len(c.inputs) >= 2 and c.inputs[1] is t:
                gathers.append(c)
            elif (
                c.op in INDEX_OPS
                and all(c is not n for n in chain)
                and all(id(i) in reached or _constant_value(i) is not None for i in c.inputs)
            ):
                chain.append(c)
                for o in c.outputs:
                    if id(o) not in reached:
                        reached.add(id(o))
                        frontier.append(o)
    if len(gathers) != 1:
        return None
    gather = gathers[0]
    tokens = gather.inputs[0]
    t_shape, g_shape = _static(tokens), _static(gather.outputs[0])
    b, n = s_shape
    if t_shape is None or len(t_shape) != 3 or t_shape[:2] != [b, n + 1] or g_shape != [b, k + 1, t_shape[2]]:
        return None
    m = Match(topk, gather, chain, k, scores, tokens)
    return m if _selects_like_plugin(m, b, n, t_shape[2], int(graph.opset or 17)) else None


def _selects_like_plugin(m: Match, b: int, n: int, c: int, opset: int) -> bool:
    """Run the candidate's index arithmetic and gather on test indices; True iff it equals the plugin's gather.

    The subgraph runs in ONNX Runtime (onnx.reference's GatherElements cannot take more than 64 rows).
    """
    import onnx_graphsurgeon as gs

    mapping: dict[int, Any] = {}

    def local(t: Any) -> Any:
        if id(t) not in mapping:
            v = _constant_value(t)
            mapping[id(t)] = gs.Constant(f"c{len(mapping)}", np.array(v)) if v is not None else gs.Variable(f"v{len(mapping)}")
        return mapping[id(t)]

    idx_in = gs.Variable("indices", dtype=np.int64, shape=[b, m.k])
    tok_in = gs.Variable("tokens", dtype=np.float32, shape=[b, n + 1, c])
    mapping[id(m.topk.outputs[1])] = idx_in
    mapping[id(m.tokens)] = tok_in
    nodes = [gs.Node(x.op, attrs=dict(x.attrs), inputs=[local(i) for i in x.inputs], outputs=[local(o) for o in x.outputs])
             for x in [*m.chain, m.gather]]
    out = mapping[id(m.gather.outputs[0])]
    out.dtype, out.shape = np.float32, [b, m.k + 1, c]
    g = gs.Graph(nodes=nodes, inputs=[idx_in, tok_in], outputs=[out], opset=opset)
    g.cleanup()
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((b, n)).astype(np.float32)
    tokens = rng.standard_normal((b, n + 1, c)).astype(np.float32)
    want, idx32 = topk_gather(scores, tokens, m.k)
    try:
        got = run_onnx(gs.export_onnx(g), {"indices": idx32.astype(np.int64), "tokens": tokens})[out.name]
    except Exception:  # noqa: BLE001 - any failure to evaluate means "not our pattern"
        return False
    return bool(got.shape == want.shape and np.array_equal(got, want))


def find_patterns(graph: Any) -> list[Match]:
    return [m for node in list(graph.nodes) if node.op == "TopK" and (m := _match(node, graph)) is not None]


# ---- rewriting ----
def _replace(graph: Any, m: Match) -> None:
    import onnx_graphsurgeon as gs  # type: ignore[import-untyped]

    b, k = int(m.scores.shape[0]), m.k
    prefix = m.topk.name.rsplit("/", 1)[0] + "/" if "/" in (m.topk.name or "") else ""
    name = f"{prefix}{PLUGIN_OP}"
    kept_tokens = m.gather.outputs[0]
    kept_tokens.dtype = m.tokens.dtype
    kept_tokens.shape = [b, k + 1, int(m.tokens.shape[2])]
    indices = m.topk.outputs[1]
    m.gather.outputs.clear()
    m.topk.outputs.clear()
    idx32 = gs.Variable(f"{name}/kept_indices_int32", dtype=np.int32, shape=[b, k])
    graph.nodes.append(gs.Node(
        PLUGIN_OP, name=name, domain=PLUGIN_DOMAIN,
        attrs={"k": k, "plugin_version": PLUGIN_VERSION, "plugin_namespace": PLUGIN_NAMESPACE},
        inputs=[m.scores, m.tokens], outputs=[kept_tokens, idx32],
    ))
    chain_ids = {id(n) for n in m.chain}
    if indices in graph.outputs or any(id(c) not in chain_ids for c in indices.outputs):
        # The kept indices are a graph output (or used elsewhere) as int64: cast the plugin's int32.
        indices.dtype = np.int64
        graph.nodes.append(gs.Node("Cast", name=f"{name}/Cast", attrs={"to": onnx.TensorProto.INT64},
                                   inputs=[idx32], outputs=[indices]))


def rewrite(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """Replace every TopK + gather pruning pattern; returns the new model and how many were replaced."""
    import onnx_graphsurgeon as gs  # type: ignore[import-untyped]

    graph = gs.import_onnx(model)
    matches = find_patterns(graph)
    for m in matches:
        _replace(graph, m)
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    out = gs.export_onnx(graph)
    if matches and not any(o.domain == PLUGIN_DOMAIN for o in out.opset_import):
        out.opset_import.append(onnx.helper.make_opsetid(PLUGIN_DOMAIN, 1))
    out.ir_version = model.ir_version
    return out, len(matches)


def count_plugins(model: onnx.ModelProto) -> int:
    return sum(1 for n in model.graph.node if n.op_type == PLUGIN_OP and n.domain == PLUGIN_DOMAIN)


def check_plugin_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx.checker (custom domain declared; plugin nodes not schema-checked) and fully static shapes."""
    inferred = onnx_utils.check(model, custom_domains=(PLUGIN_DOMAIN,))
    loose = onnx_utils.non_static_values(inferred)
    if loose:
        raise DvitError(f"the rewritten graph has tensors without a static shape ({'; '.join(loose[:3])}): report this as a bug")
    return inferred


def rewrite_checked(model: onnx.ModelProto, expected: int, what: str) -> tuple[onnx.ModelProto, int]:
    """rewrite() + check, failing unless exactly `expected` patterns were found."""
    new, n = rewrite(model)
    if n != expected:
        raise DvitError(
            f"{what}: found {n} TopK+gather pruning pattern(s) where the manifest says {expected}: the graph is not "
            "one 'dvit export' wrote (or was changed after); re-export it"
        )
    return (check_plugin_graph(new) if n else model), n


# ---- verification in ONNX Runtime ----
def _equal_outputs(a: dict[str, np.ndarray], b: dict[str, np.ndarray], what: str) -> None:
    for name, v in a.items():
        w = b[name]
        if v.shape != w.shape or v.dtype != w.dtype or not np.array_equal(v, w):
            raise DvitError(f"{what}: output {name} of the plugin graph differs from the original: report this as a bug")


def verify_against_original(
    original: onnx.ModelProto, rewritten: onnx.ModelProto, feeds: dict[str, np.ndarray], what: str
) -> dict[str, np.ndarray]:
    """Both graphs in ONNX Runtime (the plugin through the reference op), graph rewrites off: outputs must be
    bitwise equal."""
    # ONNX Runtime's graph rewrites off on both sides: its Cast elimination in FP16 graphs depends on the ops
    # around a Cast, so with a custom op in place of TopK + Gather it would round differently elsewhere.
    want = run_onnx(original, feeds, optimize=False)
    got = run_onnx(rewritten, feeds, optimize=False)  # the session factory runs plugin nodes through the reference op
    _equal_outputs(want, got, what)
    return want


# ---- the pass over a graph set ----
def plugin_pass(
    graphs: str | Path, out: str | Path, *, overwrite: bool = False, verify: bool = True, data: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Rewrite every graph of an export or precision graph set; returns the plugin graph set's manifest."""
    src = GraphSet.load(graphs, ("export", "precision"))
    # The spatial families keep every position (ranked by one TopK over the whole map, both partitions gathered
    # with GatherElements, scattered back with ScatterElements): no TopK+gather-of-k pattern, TensorRT's native
    # layers (see plugins/README.md, "Spatial sparsification"). The pass copies their graphs unchanged.
    per_point = 0 if src.config.boundary == "features" else 1
    n_prune = (src.num_stages - 1) * per_point
    jobs: list[tuple[GraphEntry, int]] = []  # (graph, expected replacements)
    for g in src.batches.values():
        jobs += [(s, per_point if s.index else 0) for s in g.stages] + [(g.fused, n_prune)]
        if g.teacher is not None:
            jobs.append((g.teacher, 0))
    if verify:
        from . import topk_gather_ref

        topk_gather_ref.register_ort_ops()  # fail early, before any work, when onnxruntime-extensions is missing

    from tqdm import tqdm  # type: ignore[import-untyped]

    with atomic_dir(out, overwrite=overwrite) as tmp:
        new_graphs: dict[int, dict[str, Any]] = {b: {"stages": [], "fused": None, "teacher": None} for b in src.batches}
        total = 0
        feeds_by_batch: dict[int, dict[str, np.ndarray]] = {}
        for entry, expected in tqdm(jobs, desc="plugin-pass", unit="graph", disable=not progress, file=sys.stderr):
            rel = entry.file
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            original = onnx_utils.load(entry.path)
            new, n = rewrite_checked(original, expected, rel)
            if n:
                onnx_utils.save(new, tmp / rel)
            else:
                shutil.copyfile(entry.path, tmp / rel)  # nothing to replace: the very same file
            report: dict[str, Any] = {"replaced": n}
            if verify and n:
                feeds = _feeds(src, entry, feeds_by_batch, data)
                verify_against_original(original, new, feeds, rel)
                report["verified"] = "bitwise equal to the original graph in ONNX Runtime (CPU, reference op)"
            inputs, outputs = onnx_utils.io_signature(new)
            keep = {k: v for k, v in entry.info.items()
                    if k not in ("file", "sha256", "bytes", "inputs", "outputs", "verification")}
            keep["nodes"] = len(new.graph.node)
            if entry.role == "fused":
                counts, orphans = onnx_utils.stage_attribution(new)
                if orphans:
                    raise DvitError(f"{rel}: nodes without a /stageN/ prefix after the pass ({', '.join(orphans[:3])})")
                keep["stage_nodes"] = {str(i): c for i, c in sorted(counts.items())}
            e = file_entry(tmp, rel, **keep, inputs=inputs, outputs=outputs, plugin_nodes=count_plugins(new), **report)
            if entry.role == "stage":
                new_graphs[entry.batch]["stages"].append(e)
            else:
                new_graphs[entry.batch][entry.role] = e
            total += n
        write_graph_set(
            tmp, "plugin", src.header(), {b: batch_section(**g) for b, g in new_graphs.items()},
            source_graphs={"path": str(src.root), "kind": src.kind, "manifest_sha256": src.sha256},
            plugin={"name": PLUGIN_OP, "version": PLUGIN_VERSION, "namespace": PLUGIN_NAMESPACE, "domain": PLUGIN_DOMAIN,
                    "attributes": {"k": "int: kept patch tokens"},
                    "outputs": ["kept_tokens [B,k+1,C] (class token first)", "kept_indices [B,k] int32"]},
            replaced={"total": total, "per_graph": {e["file"]: e["replaced"] for g in new_graphs.values()
                                                    for e in [*g["stages"], g["fused"], g["teacher"]] if e}},
            ort_reference=_ort_reference_info() if verify and total else None,
            native_selection=None if per_point else NATIVE_SELECTION,
        )
    return GraphSet.load(out, ("plugin",)).manifest


NATIVE_SELECTION = ("spatial sparsification: positions are ranked by TensorRT's native TopK and split and merged "
                    "by its native GatherElements and ScatterElements (no DvitTopKGather pattern)")


def _ort_reference_info() -> dict[str, str]:
    import importlib.metadata

    return {"route": "onnxruntime-extensions PyOp (domain ai.onnx.contrib) running pipeline.topk_gather_ref",
            "onnxruntime-extensions": importlib.metadata.version("onnxruntime-extensions")}


def _feeds(src: GraphSet, entry: GraphEntry, cache: dict[int, dict[str, np.ndarray]], data: str | None) -> dict[str, np.ndarray]:
    """Inputs for one graph: test images, or the tokens the source graph set's stage chain computes from them."""
    if entry.batch not in cache:
        from .data import verification_images

        b = entry.batch
        images, _ = verification_images(src.config, b, data)
        x = images[:b].numpy()
        with graph_runners(src, b) as runners:
            cache[b] = {"images": x, **runners.chain.infer({"images": x})}
    return {name: cache[entry.batch][name] for name in entry.input_names}


# ---- CLI ----
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--graphs", required=True, metavar="DIR",
                        help="an export or precision graph set (written by 'dvit export' or 'dvit precision')")
    parser.add_argument("--out", required=True, help="output directory (replaced only when the pass succeeds)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the ONNX Runtime comparison with the original graphs (needs onnxruntime-extensions)")
    parser.add_argument("--data", default=None, help="test images for the comparison (default: as 'dvit export')")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    m = plugin_pass(args.graphs, args.out, overwrite=args.overwrite, verify=not args.no_verify, data=args.data,
                    progress=not args.no_progress)
    per = m["replaced"]["per_graph"]
    if m.get("native_selection"):
        print(f"{m['native_selection']}: {len(per)} graphs copied unchanged -> {args.out}")
        return 0
    print(f"replaced {m['replaced']['total']} TopK+gather pattern(s) with {PLUGIN_OP} in {sum(1 for v in per.values() if v)} "
          f"of {len(per)} graphs -> {args.out}" + ("" if args.no_verify else "; outputs bitwise equal to the originals"))
    return 0

