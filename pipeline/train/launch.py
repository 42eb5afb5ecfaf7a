"""`dvit train --nproc-per-node N [--nnodes M --rdzv-endpoint HOST:PORT]`: start the same command under torchrun.

The flags are torchrun's own, passed through, so a user who knows torchrun knows these; dvit adds the c10d
rendezvous backend and a default job id. Run the same command on every node: c10d assigns node ranks.
"""
from __future__ import annotations

import subprocess
import sys

LAUNCH_FLAGS = ("--nnodes", "--nproc-per-node", "--rdzv-endpoint", "--rdzv-id")


def strip_launch_flags(argv: list[str]) -> list[str]:
    """argv without the launcher's flags and their values (either `--flag value` or `--flag=value`)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in LAUNCH_FLAGS:
            skip = True
            continue
        if a.split("=", 1)[0] in LAUNCH_FLAGS:
            continue
        out.append(a)
    return out


def torchrun_command(argv: list[str], nproc_per_node: int, nnodes: str, endpoint: str | None, rdzv_id: str) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nnodes}", f"--nproc-per-node={nproc_per_node}"]
    if endpoint:
        cmd += ["--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={rdzv_id}"]
    else:
        cmd += ["--standalone"]
    return [*cmd, "-m", "pipeline.cli", *strip_launch_flags(argv)]


def launch(argv: list[str], nproc_per_node: int, nnodes: str, endpoint: str | None, rdzv_id: str) -> int:
    """Run torchrun in the foreground and return its exit status."""
    cmd = torchrun_command(argv, nproc_per_node, nnodes, endpoint, rdzv_id)
    print("launching: " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
    return subprocess.run(cmd, check=False).returncode
