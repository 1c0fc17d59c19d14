"""The PyTorch rebuild of an exported model lives in :mod:`litseg.train.onnx_unet` (the training recipe uses it
to fine-tune a released model); the GPU check imports it from here."""

from litseg.train.onnx_unet import OnnxUNet, onnx_weights, unet_from_onnx

__all__ = ["OnnxUNet", "onnx_weights", "unet_from_onnx"]
