"""ONNX Runtime on CPU: how the sessions of a stage chain share the cores.

With ONNX Runtime's default, a spinning intra-op pool per session, the threads of the session that just ran keep
spinning after its run and steal the cores from the next session of the chain. Measured on this repository's
2-core machine (fmnist_tiny, batch 8, --threads 2, under the load of other jobs), p50 of the 4-stage chain against
the fused graph, three alternating repetitions:

    pool per session, spinning (ONNX Runtime's default)   22.7 / 25.5 / 54.3 ms   fused  8.6 /  9.3 / 25.6 ms
    pool per session, no spinning ("no-spin")               5.5 /  5.5 /  5.7 ms   fused  4.8 /  5.1 /  5.4 ms
    one global pool (set_global_thread_pool_sizes)         10.8 / 17.5 / 15.3 ms   fused  9.2 / 17.2 / 13.7 ms

Both remedies make the chain cost what the fused graph costs; "no-spin" is also the fastest on a shared machine
(the global pool's threads still spin, and its Python API cannot turn that off), and it is a per-session option,
while a global pool is process-wide and final: once it exists ONNX Runtime refuses every later session with a pool
of its own ("use_per_session_threads must be false when using a global thread pool"), so any other code in the
process (validation, tests) would break. `dvit latency` therefore runs every session with
"session.intra_op.allow_spinning" = "0" (`--pool no-spin`, the default); `--pool per-session` keeps ONNX
Runtime's default, to show the effect. The sessions come from the one session factory,
pipeline.runners.onnxrt.session(), through the keyword arguments `session_kwargs()` returns.
"""
from __future__ import annotations

import inspect
import os
from typing import Any

from ..errors import ConfigError, DvitError

POOLS = ("no-spin", "per-session")
DEFAULT_POOL = "no-spin"
SPINNING_KEY = "session.intra_op.allow_spinning"


def default_threads() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def session_kwargs(pool: str, threads: int | None) -> dict[str, Any]:
    """Keyword arguments of runners.onnxrt.session() (and OnnxRuntimeRunner) for `pool` with `threads` threads."""
    if pool not in POOLS:
        raise ConfigError(f"unknown --pool {pool!r}: use one of {', '.join(POOLS)}")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads} is not positive: pass e.g. --threads 1")
    if pool == "no-spin":
        check_session_factory()
        return {"threads": threads, "spinning": False}
    return {"threads": threads}


def check_session_factory() -> None:
    """One line when runners.onnxrt.session() does not take the `spinning` argument yet."""
    from ..runners import onnxrt

    for f in (onnxrt.session, onnxrt.OnnxRuntimeRunner):
        if "spinning" not in inspect.signature(f).parameters:
            raise DvitError(f"pipeline.runners.onnxrt.{f.__name__}() takes no `spinning` argument: this checkout "
                            "lacks that change; run with --pool per-session")


def describe(session: Any) -> dict[str, Any]:
    """What a session was created with, read back from ONNX Runtime: for tests and the report."""
    so = session.get_session_options()
    return {
        "use_per_session_threads": bool(so.use_per_session_threads),
        "intra_op_num_threads": int(so.intra_op_num_threads),
        "allow_spinning": _entry(so, SPINNING_KEY),
    }


def _entry(so: Any, key: str) -> str | None:
    try:
        return str(so.get_session_config_entry(key))
    except RuntimeError:  # ORT raises when the key was never set
        return None
