"""Runners: one interface over every way of computing a graph's outputs (Polygraphy's idea).

A runner has a name, declares its input and output tensor names (the graphs' own: `images`, `tokens_i`,
`logits`, `kept_indices_i`) and maps a dict of named arrays to a dict of named arrays, so that validation can
compare any runner with any other. Modules here import neither torch nor the stages; `pytorch.py` imports torch
only when a PyTorch runner is made.
"""
from .base import Runner, run_batched

__all__ = ["Runner", "run_batched"]
