"""Rebuild litseg's PyTorch U-Net from an exported ONNX model, weights read from its initializers.

The GPU check (:mod:`benchmarks.gpu_check`) uses it where the machine's onnxruntime has no CUDA provider:
the same exported network then runs through PyTorch CUDA as a clearly labelled stand-in. ``litseg-export``
keeps the PyTorch parameter names as initializer names (``enc1.0.weight``, ..., ``head.bias``; an ensemble's
``members.N.`` prefix), so the mapping is by name and checked strictly: every parameter of the rebuilt
network must be found with its shape, and nothing may be left over. tests/export/test_onnx_unet.py checks that
the rebuilt network reproduces onnxruntime's output within 1e-4.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SPEC_KEY = "litseg.preprocess_spec"
ARCHITECTURE_KEY = "litseg.architecture"
_MEMBER = re.compile(r"^members\.(\d+)\.")


@dataclass(frozen=True)
class OnnxUNet:
    """What was rebuilt: the network (eval mode, CPU, float32) and the facts read from the ONNX file."""

    network: Any  # torch.nn.Module
    base: int
    num_classes: int
    members: int
    spec: dict[str, Any]


def onnx_weights(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The initializers (name -> array) and the metadata (key -> value) of an ONNX file."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(path))
    weights = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    return weights, {p.key: p.value for p in proto.metadata_props}


def _load(network: Any, weights: dict[str, np.ndarray], path: Path) -> None:
    import torch

    expected = network.state_dict()
    missing = sorted(set(expected) - set(weights))
    unused = sorted(set(weights) - set(expected))
    if missing or unused:
        raise ValueError(
            f"{path}: its initializers do not match the litseg U-Net's parameters (missing {missing[:5]}, "
            f"unexpected {unused[:5]}); was it exported by litseg-export with the parameter names kept?"
        )
    for name, tensor in expected.items():
        if tuple(tensor.shape) != weights[name].shape:
            shape = weights[name].shape
            raise ValueError(f"{path}: initializer {name} has shape {shape}; expected {tuple(tensor.shape)}")
    network.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in weights.items()})


def unet_from_onnx(path: Path) -> OnnxUNet:
    """Rebuild ``litseg.train.fit.unet.UNet`` (or the mean of several, as ``litseg-export`` writes an ensemble)
    with the base width and classes of the ONNX model at ``path`` and load its weights.

    Raises
    ------
    ValueError
        The file is not a litseg U-Net export (other architecture, renamed or missing initializers).
    """
    from litseg.train.fit.unet import UNet

    weights, metadata = onnx_weights(path)
    spec = json.loads(metadata[SPEC_KEY])
    architecture = json.loads(metadata.get(ARCHITECTURE_KEY, "{}"))
    if architecture.get("name", "unet2d") != "unet2d":
        raise ValueError(f"{path}: architecture {architecture.get('name')!r} is not litseg's unet2d")
    members = sorted({int(m.group(1)) for name in weights if (m := _MEMBER.match(name))})
    prefix = "members.0." if members else ""
    if f"{prefix}enc1.0.weight" not in weights:
        raise ValueError(f"{path}: no initializer {prefix}enc1.0.weight; not a litseg U-Net export")
    base = int(architecture.get("base") or weights[f"{prefix}enc1.0.weight"].shape[0])
    num_classes = len(spec["class_names"])
    if members:
        from litseg.export.onnx_export import MeanProbabilities

        network: Any = MeanProbabilities([UNet(num_classes, base=base) for _ in members])
    else:
        network = UNet(num_classes, base=base)
    _load(network, weights, path)
    return OnnxUNet(network.eval(), base, num_classes, max(len(members), 1), spec)
