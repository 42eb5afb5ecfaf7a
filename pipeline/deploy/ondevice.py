"""What `dvit deploy` runs on the device besides the `dvit` stages (remote.ONDEVICE): shipped in the bundle, run
by the device's interpreter from the release directory.

    python -m pipeline.deploy.ondevice check-reuse ENGINES GRAPHS
        the engines a --no-build/--only-validate deploy hard-linked into its release were built from GRAPHS (the
        graph set shipped) and the plugin library their manifest names is there; else exit 1 with one line.
    python -m pipeline.deploy.ondevice link-cache ENGINES CACHE
        replaces each engine file in ENGINES by a hard link to the identical plan in the engine cache CACHE
        (content-addressed, written atomically, never rewritten in place), so that a release does not hold a
        second copy of every engine beside the cache.

Needs only the standard library and the graph-set reader (no TensorRT, no onnx).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..errors import DvitError
from ..graphset import GraphSet
from ..io import sha256_file


def check_reuse(engines: Path, graphs: Path) -> str:
    """One line on success; raises DvitError (one line) when the engines do not belong to `graphs`."""
    from ..backend.tensorrt import plugins

    es = GraphSet.load(engines, ("engine",))  # verifies every engine's hash
    src = GraphSet.load(graphs)
    built_from = (es.manifest.get("source_graphs") or {}).get("manifest_sha256")
    if built_from != src.sha256:
        raise DvitError(f"the reused engines were built from another graph set (manifest sha256 "
                        f"{str(built_from)[:12]}, {','.join(es.precision)}, batch sizes "
                        f"{', '.join(map(str, es.batch_sizes))}) than the one shipped ({src.sha256[:12]}, "
                        f"{','.join(src.precision)}, batch sizes {', '.join(map(str, src.batch_sizes))}): deploy "
                        "without --no-build/--only-validate")
    lib = plugins.for_graph_set(es) if es.manifest.get("plugin_library") else None
    if lib is not None and not lib.is_file():
        raise DvitError(f"the reused engines name the plugin library {lib}, which is gone: deploy without "
                        "--no-build/--only-validate to rebuild them")
    return f"engines built from these graphs ({src.sha256[:12]})" + (f", plugin library {lib}" if lib else "")


def link_cache(engines: Path, cache: Path) -> str:
    """Hard-link every engine file of `engines` that the cache holds byte for byte; returns one summary line."""
    records: dict[str, Path] = {}
    for rec in cache.glob("*.json") if cache.is_dir() else ():
        try:
            sha = json.loads(rec.read_text()).get("plan_sha256")
        except (OSError, ValueError, AttributeError):
            continue
        plan = rec.with_suffix(".plan")
        if isinstance(sha, str) and plan.is_file():
            records[sha] = plan
    es = GraphSet.load(engines, ("engine",), verify=False)
    linked = total = saved = 0
    for entry in es.entries():
        total += 1
        path, sha = entry.path, entry.sha256
        cached = records.get(sha)
        if cached is None or not path.is_file():
            continue
        plan = cached
        if os.path.samefile(plan, path):
            linked += 1
            continue
        if plan.stat().st_size != path.stat().st_size or sha256_file(plan) != sha:
            continue
        tmp = path.with_name(path.name + ".link")
        try:
            os.link(plan, tmp)
            os.replace(tmp, path)
        except OSError:  # another file system, or links not allowed: the copy stays
            tmp.unlink(missing_ok=True)
            continue
        linked += 1
        saved += path.stat().st_size
    return (f"{linked} of {total} engines are hard links into the engine cache {cache} "
            f"({saved / 2**20:.1f} MiB not stored twice)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.deploy.ondevice", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check-reuse")
    c.add_argument("engines", type=Path)
    c.add_argument("graphs", type=Path)
    c = sub.add_parser("link-cache")
    c.add_argument("engines", type=Path)
    c.add_argument("cache", type=Path)
    args = p.parse_args(argv)
    try:
        if args.command == "check-reuse":
            print(check_reuse(args.engines, args.graphs))
        else:
            print(link_cache(args.engines, args.cache))
    except DvitError as e:
        print(f"dvit deploy ({args.command}): {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
