"""Test-wide settings: one intra-op thread, since a 2-core CI machine runs other processes too and
OpenMP's spinning threads slow everything down when oversubscribed; ONNX Runtime's per-session pools (its own
default), since the global pool, once a process holds it, refuses the sessions that ModelOpt and onnxsim make in
the same process (pipeline/backend/onnxruntime/pools.py). Tests of the global pool run in processes of their own
with DVIT_ORT_POOL removed from the environment."""
import os

import torch

os.environ["DVIT_ORT_POOL"] = "per-session"
torch.set_num_threads(1)
