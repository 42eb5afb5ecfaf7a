"""Dynamic spatial sparsification (issue 18): DynamicCNN (ConvNeXt) and DynamicSwin (Swin), as the official T-PAMI
code defines them. The PyTorch models, their configurations and their checkpoints; export and the later stages are
not wired to them yet."""
