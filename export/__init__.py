"""From a trained checkpoint to the ONNX model the runtime reads (:mod:`.onnx_export`, :mod:`.cli`:
``litseg-export``), and back (:mod:`.onnx_unet` rebuilds the PyTorch network from an exported model;
:mod:`.init_checkpoint` turns it into a checkpoint to fine-tune). Imports :mod:`litseg.train.fit` and
:mod:`litseg.runtime`; nothing imports :mod:`litseg.export` but its tests and benchmarks.
"""
