"""ONNX Runtime on the CPU: how the sessions of a process share the cores.

Three choices (`--pool`), every session of the process made by the one session factory (runner.session):
  global       ONE intra-op pool for the whole process (ONNX Runtime's global thread pools; its threads spin
               while waiting, and the Python API cannot turn that off). The stage sessions of a chain take turns
               on the same threads, so none steals cores from another, and no pool sits idle.
  no-spin      a pool per session whose idle threads sleep at once ("session.intra_op.allow_spinning" = "0").
  per-session  ONNX Runtime's own default: a spinning pool per session; the threads of the session that just ran
               keep spinning and steal the cores from the next session of a chain.
Measured by `make bench` (benchmarks/bench_ort_pools.py: DeiT-S 224, rho 0.7, each pool alone in its own
process; results in benchmarks/results/ort_pools.json); DEFAULT_POOL is the fastest there.

The global pool is process-wide and final: ONNX Runtime creates it once, cannot resize it, and from then on refuses
every session that asks for a pool of its own ("use_per_session_threads must be false when using a global thread
pool") -- also sessions that other libraries make in the same process (ModelOpt's calibration, onnxsim's check).
So only the commands whose every session comes from this factory (validate, latency) default to it; the library
default of runner.session() is ONNX Runtime's own until the process holds the global pool, and the global pool
after; an explicit request for another pool in a process that holds the global one is refused with one line, and the environment variable DVIT_ORT_POOL overrides the default pool for
a process that embeds dvit next to sessions of its own (the test suite sets it).
"""
from __future__ import annotations

import os
from typing import Any

from ...errors import ConfigError

POOLS = ("global", "no-spin", "per-session")
DEFAULT_POOL = "global"
POOL_ENV = "DVIT_ORT_POOL"
SPINNING_KEY = "session.intra_op.allow_spinning"

_global_threads: int | None = None  # intra-op threads of this process's global pool, once it exists


def default_threads() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_pool() -> str:
    """DEFAULT_POOL, unless DVIT_ORT_POOL names another for this process."""
    pool = os.environ.get(POOL_ENV) or DEFAULT_POOL
    if pool not in POOLS:
        raise ConfigError(f"{POOL_ENV}={pool!r} is not a pool: use one of {', '.join(POOLS)}")
    return pool


def check(pool: str, threads: int | None) -> None:
    if pool not in POOLS:
        raise ConfigError(f"unknown --pool {pool!r}: use one of {', '.join(POOLS)}")
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads {threads} is not positive: pass e.g. --threads 1")


def global_pool_threads() -> int | None:
    """The global pool's intra-op threads, or None while this process has none."""
    return _global_threads


def apply(so: Any, pool: str | None, threads: int | None) -> None:
    """Set `pool` with `threads` intra-op threads (None: ONNX Runtime's default) on the SessionOptions `so`;
    pool None: the global pool where this process has one, else ONNX Runtime's own (per-session).

    The global pool is created by the first session that asks for it, with that session's `threads`; later
    sessions share it whatever they ask (the pool cannot be resized: global_pool_threads() says what it has)."""
    global _global_threads
    if pool is None:
        pool = "global" if _global_threads is not None else "per-session"
    check(pool, threads)
    if pool == "global":
        if _global_threads is None:
            from onnxruntime.capi import _pybind_state  # type: ignore[import-untyped]

            n = threads or default_threads()
            _pybind_state.set_global_thread_pool_sizes(n, 1)
            _global_threads = n
        so.use_per_session_threads = False
        return
    if _global_threads is not None:
        raise ConfigError(f"this process already runs ONNX Runtime's global thread pool, which then takes every "
                          f"session: use --pool {pool} in a process of its own (or set {POOL_ENV}={pool} before "
                          "the first session)")
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    if pool == "no-spin":
        so.add_session_config_entry(SPINNING_KEY, "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")


def describe(session: Any) -> dict[str, Any]:
    """What a session was created with, read back from ONNX Runtime: for tests and the report."""
    so = session.get_session_options()
    per_session = bool(so.use_per_session_threads)
    return {
        "use_per_session_threads": per_session,
        "intra_op_num_threads": int(so.intra_op_num_threads) if per_session else _global_threads,
        "allow_spinning": _entry(so, SPINNING_KEY),
    }


def _entry(so: Any, key: str) -> str | None:
    try:
        return str(so.get_session_config_entry(key))
    except RuntimeError:  # ORT raises when the key was never set
        return None
