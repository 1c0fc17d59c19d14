"""``litseg-export CKPT --out model.onnx``: checkpoint -> ONNX with litseg metadata, verified."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from litseg.train.data import data_summary, patient_split, read_info
from litseg.train.trainer import TrainConfig, load_checkpoint

from .onnx_export import ExportError, export_onnx, to_fp16

EXIT_EXPORT = 4


def _data_summary_from_set(path: Path, config: TrainConfig) -> dict[str, object] | None:
    """The training-data summary of a checkpoint that predates it, recomputed from its HDF5 set (the same
    patient-wise split) when that file is still there; None otherwise."""
    if not path.is_file():
        return None
    info = read_info(path)
    train_idx, val_idx = patient_split(info, config.val_fraction, config.seed)
    return data_summary(path, info, train_idx, val_idx)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="litseg-export", description="Export a litseg checkpoint to ONNX.")
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    parser.add_argument("--name", default=None, help="model name (default: litseg-<task>)")
    parser.add_argument("--version", default="0.1.0", help="model version written into the metadata")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max |ONNX - PyTorch| on probabilities")
    parser.add_argument("--fp16", action="store_true", help="also write <out>-fp16.onnx (half-precision weights)")
    parser.add_argument("--metadata", default=None, help="JSON object of extra metadata (e.g. test metrics)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        ckpt = load_checkpoint(args.checkpoint)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        print(f"litseg-export: error: cannot load checkpoint {args.checkpoint}: {exc}", file=sys.stderr)
        return 3
    history = ckpt.metrics.get("history", [])
    last = history[-1] if history else {}
    extra = {
        "litseg.task": ckpt.spec.task,
        "litseg.class_names": json.dumps(list(ckpt.spec.class_names)),
        "litseg.architecture": json.dumps({"name": "unet2d", "base": ckpt.model.base}),
        "litseg.training": json.dumps(
            {k: v for k, v in json.loads(json.dumps(ckpt.config.__dict__)).items() if k not in ("resume", "out")}
        ),
        "litseg.validation_metrics": json.dumps({k: v for k, v in last.items() if k.startswith("val_")}),
        "litseg.epochs_trained": str(ckpt.epoch),
    }
    data = ckpt.metrics.get("data") or _data_summary_from_set(Path(ckpt.config.data), ckpt.config)
    if data:
        extra["litseg.training_data"] = json.dumps(data)
    if args.metadata:
        extra.update(
            {
                f"litseg.{k}": json.dumps(v) if not isinstance(v, str) else v
                for k, v in json.loads(args.metadata).items()
            }
        )
    name = args.name or f"litseg-{ckpt.spec.task}"
    try:
        check = export_onnx(ckpt.model, ckpt.spec, args.out, name, args.version, extra, args.tolerance)
        report = {
            "out": str(args.out),
            "max_abs_diff": check.max_abs_diff,
            "argmax_agreement": check.argmax_agreement,
        }
        if args.fp16:
            fp16_path = args.out.with_name(args.out.stem + "-fp16.onnx")
            half = to_fp16(args.out, fp16_path, ckpt.model, ckpt.spec)
            report.update(
                {
                    "fp16_out": str(fp16_path),
                    "fp16_max_abs_diff": half.max_abs_diff,
                    "fp16_argmax_agreement": half.argmax_agreement,
                }
            )
    except ExportError as exc:
        print(f"litseg-export: error: {exc}", file=sys.stderr)
        return EXIT_EXPORT
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
