"""``python -m litseg.export.init_checkpoint MODEL.onnx --out init.pt``: a training checkpoint holding the
weights of an exported litseg model, so that ``litseg-train --init init.pt`` fine-tunes a released model
(the recipe starts the 0.5 models from the 0.4 weights this way). Only the weights matter to ``--init``;
the spec and config recorded are the exported model's own."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from litseg.runtime.errors import EXIT_BAD_INPUT, EXIT_OK
from litseg.runtime.spec import PreprocessSpec
from litseg.train.fit.checkpoint import save_checkpoint
from litseg.train.fit.config import TrainConfig

from .onnx_unet import unet_from_onnx


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m litseg.export.init_checkpoint", description=__doc__)
    parser.add_argument("model", type=Path, help="ONNX model exported by litseg-export (one network)")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    args = parser.parse_args(argv)
    try:
        rebuilt = unet_from_onnx(args.model)
    except (ValueError, KeyError, OSError) as exc:
        print(f"init_checkpoint: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if rebuilt.members != 1:
        print(
            f"init_checkpoint: error: {args.model} is an ensemble of {rebuilt.members}; pass one network",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    config = TrainConfig(data=(str(args.model),), out=str(args.out.parent), base=rebuilt.base)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    spec = PreprocessSpec.from_json(json.dumps(rebuilt.spec))
    save_checkpoint(args.out, rebuilt.network, None, config, spec, 0, {"source": str(args.model)})
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
