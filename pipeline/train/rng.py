"""Random state: saved into checkpoints for exact resume, and pinned per sample or per step.

Anything random that happens per sample (timm's transforms) or per batch (timm's Mixup) draws from the global
Python, NumPy and torch generators. Seeding them from (seed, epoch, position) around each call makes the draw
independent of how many worker processes or ranks share the work, and of what ran before.
"""
from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Python, NumPy and torch (CPU) generators seeded for the block, and restored after it."""
    saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.random.default_generator.manual_seed(seed)  # the CPU generator only: CUDA streams keep theirs
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])


def step_seed(seed: int, epoch: int, step: int, micro: int = 0) -> int:
    """One seed per (run seed, epoch, optimiser step, micro-batch), the same on every rank."""
    return (seed * 1_000_003 + epoch * 100_003 + step) * 17 + micro
