"""dvit-edge: an edge-deployment compiler for DynamicViT."""
__version__ = "0.1.0"
