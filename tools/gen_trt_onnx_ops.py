#!/usr/bin/env python3
"""Regenerate pipeline/trt_onnx_ops.json, the operator table of `dvit scan`, from ONNX-TensorRT's operators.md.

    python tools/gen_trt_onnx_ops.py --older OLDER.md --newer NEWER.md [--newer-added Swish] [--out FILE]

OLDER is the parser document for the oldest TensorRT we support (JetPack 6's 10.3), NEWER the one for the newest
11.x; `--older`/`--newer` also accept GIT_DIR:REF:PATH to read a file from a git mirror of onnx/onnx-tensorrt.
An operator is "supported" only if both documents support it. Where the exact release's document is not
available, pass the nearest one and say so with --older-note/--newer-note: the notes are kept in the JSON.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.opscan import TABLE_PATH, build_table


def read_source(spec: str) -> str:
    if Path(spec).is_file():
        return Path(spec).read_text()
    git_dir, ref, path = spec.split(":", 2)
    return subprocess.run(["git", "-C", git_dir, "show", f"{ref}:{path}"], check=True, capture_output=True, text=True).stdout


def dumps(table: dict) -> str:
    """Readable and diff-friendly: one line per operator."""
    head = {k: v for k, v in table.items() if k != "ops"}
    text = json.dumps(head, indent=1)[:-2]
    rows = ",\n".join(f"  {json.dumps(op)}: {json.dumps(row)}" for op, row in table["ops"].items())
    return f'{text},\n "ops": {{\n{rows}\n }}\n}}\n'


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--older", required=True, help="operators.md for the older TensorRT (file or GIT_DIR:REF:PATH)")
    p.add_argument("--newer", required=True, help="operators.md for the newer TensorRT (file or GIT_DIR:REF:PATH)")
    p.add_argument("--older-origin", default="", help="where the older document comes from (repository@ref:path)")
    p.add_argument("--newer-origin", default="", help="where the newer document comes from")
    p.add_argument("--older-note", default="", help="why this document stands for the older release")
    p.add_argument("--newer-note", default="", help="why this document stands for the newer release")
    p.add_argument("--newer-added", default="", help="comma-separated operators the newer release's changelog adds")
    p.add_argument("--newer-added-source", default="", help="the changelog those additions come from")
    p.add_argument("--covers", default="10.3,11.1", help="the two TensorRT releases the table speaks for")
    p.add_argument("--out", default=str(TABLE_PATH))
    a = p.parse_args()
    table = build_table(
        read_source(a.older),
        read_source(a.newer),
        older_source={"document": a.older_origin or a.older, "note": a.older_note},
        newer_source={"document": a.newer_origin or a.newer, "note": a.newer_note},
        newer_added=[s.strip() for s in a.newer_added.split(",") if s.strip()],
        newer_added_source=a.newer_added_source,
        covers=tuple(a.covers.split(",")),
    )
    table["generated_by"] = "tools/gen_trt_onnx_ops.py"
    Path(a.out).write_text(dumps(table))
    n = sum(r["supported"] for r in table["ops"].values())
    print(f"{a.out}: {len(table['ops'])} operators, {n} supported by both releases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
