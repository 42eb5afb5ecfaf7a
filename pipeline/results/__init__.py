"""Typed results: what `dvit validate`, `dvit latency`, `dvit reference` and `dvit deploy` write, read back.

The graph set (pipeline.graphset) is the contract between the stages that make graphs; these are the contract
between the stages that measure them and whoever reads the measurements (`dvit report`, `dvit validate
--reference REF.npz`, the deploy record). One module per result kind, each with its format string, a `load` that
refuses another format in one line naming the command that writes the right one, and a `save` that writes the
same JSON the stage always wrote (atomically, via pipeline.io). Latency's pruned/dense pairing lives here, once.

Needs neither torch, timm, ModelOpt nor ONNX: a Jetson reads results too.
"""
