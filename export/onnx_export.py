"""Export a trained U-Net to ONNX with the litseg metadata, verified against PyTorch."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from litseg.runtime.model import NAME_METADATA_KEY, VERSION_METADATA_KEY
from litseg.runtime.spec import SPEC_METADATA_KEY, PreprocessSpec

log = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"


class ExportError(RuntimeError):
    """The exported model does not reproduce PyTorch within tolerance."""


@dataclass(frozen=True)
class Verification:
    max_abs_diff: float
    argmax_agreement: float


class MeanProbabilities(torch.nn.Module):
    """An ensemble as one network: the mean of its members' softmax probabilities.

    nnU-Net's way of combining its cross-validation folds; exported as one ONNX graph, so the runtime
    and the metadata contract see one model with the members' input and output.
    """

    def __init__(self, members: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member; got none")
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(dim=0)


def export_onnx(
    model: torch.nn.Module,
    spec: PreprocessSpec,
    path: Path,
    name: str,
    version: str,
    extra_metadata: Mapping[str, str] | None = None,
    tolerance: float = 1e-4,
) -> Verification:
    """Write ``model`` as ONNX (dynamic batch, height and width axes, opset 17) and check it against PyTorch.

    The file is written atomically; on a failed check nothing is left at ``path``.
    """
    model = model.eval().cpu()
    h, w = spec.target_shape_yx
    example = torch.rand(2, 1, h, w, generator=torch.Generator().manual_seed(0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        torch.onnx.export(
            model,
            (example,),
            str(tmp),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            # dynamic height and width too: the U-Net is fully convolutional, and the runtime runs its full
            # pass on the box around the liver (runtime/focus.py), in multiples of 16 pixels
            dynamic_axes={
                INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                OUTPUT_NAME: {0: "batch", 2: "height", 3: "width"},
            },
            opset_version=OPSET,
            dynamo=False,
        )
        proto = onnx.load(str(tmp))
        props = {SPEC_METADATA_KEY: spec.to_json(), NAME_METADATA_KEY: name, VERSION_METADATA_KEY: version}
        props.update(extra_metadata or {})
        onnx.helper.set_model_props(proto, props)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
        check = verify(model, tmp, example)
        if check.max_abs_diff > tolerance or check.argmax_agreement < 0.9999:
            raise ExportError(
                f"ONNX output differs from PyTorch: max abs diff {check.max_abs_diff:.2e} (tolerance "
                f"{tolerance:.0e}), argmax agreement {check.argmax_agreement:.6f}"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported %s: max abs diff %.2e, argmax agreement %.6f", path, *vars(check).values())
    return check


def verify(model: torch.nn.Module, onnx_path: Path, example: torch.Tensor) -> Verification:
    """Run ``example`` through PyTorch and onnxruntime (CPU) and compare the probabilities."""
    with torch.no_grad():
        expected = model(example).numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: example.numpy()})
    return Verification(
        max_abs_diff=float(np.abs(got - expected).max()),
        argmax_agreement=float((got.argmax(1) == expected.argmax(1)).mean()),
    )


def to_fp16(src: Path, dst: Path, model: torch.nn.Module, spec: PreprocessSpec) -> Verification:
    """Half-precision variant (fp16 weights and activations, float32 input/output), checked loosely.

    Meant for GPUs; on CPUs onnxruntime runs fp16 slowly. Argmax agreement must stay >= 99%.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = onnx.load(str(src))
    half = convert_float_to_float16(proto, keep_io_types=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    onnx.save(half, str(tmp))
    h, w = spec.target_shape_yx
    example = torch.rand(2, 1, h, w, generator=torch.Generator().manual_seed(0))
    check = verify(model, tmp, example)
    if check.argmax_agreement < 0.99:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"fp16 model disagrees with PyTorch on {1 - check.argmax_agreement:.2%} of pixels")
    os.chmod(tmp, 0o644)
    os.replace(tmp, dst)
    return check
