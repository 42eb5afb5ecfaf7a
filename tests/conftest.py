"""Test-wide settings: one intra-op thread, since a 2-core CI machine runs other processes too and
OpenMP's spinning threads slow everything down when oversubscribed."""
import torch

torch.set_num_threads(1)
