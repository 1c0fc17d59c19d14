"""``litseg-export CKPT [CKPT ...] --out model.onnx``: checkpoint(s) -> ONNX with litseg metadata, verified."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from litseg.runtime.errors import EXIT_BAD_INPUT, EXIT_MODEL, EXIT_OK, EXIT_OUTPUT
from litseg.runtime.model import (
    INFERENCE_METADATA_KEY,
    MAX_MIN_TUMOR_ML,
    MAX_TTA_SHIFT_PX,
    MAX_TUMOR_MARGIN_MM,
    NAME_METADATA_KEY,
    POSTPROCESS_METADATA_KEY,
    VERSION_METADATA_KEY,
)
from litseg.runtime.spec import SPEC_METADATA_KEY
from litseg.train.fit.dataset import data_summary, patient_split, read_info
from litseg.train.fit.trainer import Checkpoint, TrainConfig, load_checkpoint

from .onnx_export import ExportError, MeanProbabilities, export_onnx, to_fp16

#: Metadata litseg itself writes; --metadata may add keys but never replace these (the runtime's contract).
RESERVED_METADATA_KEYS = frozenset(
    {SPEC_METADATA_KEY, NAME_METADATA_KEY, VERSION_METADATA_KEY, POSTPROCESS_METADATA_KEY, INFERENCE_METADATA_KEY}
)


def _data_summary_from_set(path: Path, config: TrainConfig) -> dict[str, object] | None:
    """The training-data summary of a checkpoint that predates it, recomputed from its HDF5 set (the same
    patient-wise split) when that file is still there; None otherwise."""
    if not path.is_file():
        return None
    info = read_info(path)
    train_idx, val_idx = patient_split(info, config.val_fraction, config.seed)
    return data_summary(path, info, train_idx, val_idx)


def _member_metadata(ckpt: Checkpoint) -> dict[str, object]:
    """What the ONNX metadata records of one trained network: its config, last validation, data."""
    history = ckpt.metrics.get("history", [])
    last = history[-1] if history else {}
    member: dict[str, object] = {
        "base": ckpt.model.base,
        "training": {
            k: v for k, v in json.loads(json.dumps(ckpt.config.__dict__)).items() if k not in ("resume", "out")
        },
        "validation_metrics": {k: v for k, v in last.items() if k.startswith("val_")},
        "epochs_trained": ckpt.epoch,
    }
    # checkpoints from before the summary was recorded were trained on one set
    data = ckpt.metrics.get("data") or _data_summary_from_set(Path(ckpt.config.data[0]), ckpt.config)
    if data:
        member["training_data"] = data
    return member


def _metadata(ckpts: Sequence[Checkpoint]) -> dict[str, str]:
    """The litseg.* metadata keys. The top-level training keys describe the first member; an ensemble
    also lists every member under ``litseg.members``."""
    members = [_member_metadata(c) for c in ckpts]
    first = members[0]
    architecture: dict[str, object] = {"name": "unet2d", "base": first["base"]}
    extra = {
        "litseg.task": ckpts[0].spec.task,
        "litseg.class_names": json.dumps(list(ckpts[0].spec.class_names)),
        "litseg.training": json.dumps(first["training"]),
        "litseg.validation_metrics": json.dumps(first["validation_metrics"]),
        "litseg.epochs_trained": str(first["epochs_trained"]),
    }
    if "training_data" in first:
        extra["litseg.training_data"] = json.dumps(first["training_data"])
    if len(members) > 1:
        architecture.update({"members": len(members), "combine": "mean of softmax probabilities"})
        extra["litseg.members"] = json.dumps(members)
    extra["litseg.architecture"] = json.dumps(architecture)
    return extra


class _InputError(ValueError):
    """A checkpoint that cannot be exported (exit 3, as the runtime's bad input)."""


def _load(paths: Sequence[Path]) -> list[Checkpoint]:
    """Load every checkpoint; an ensemble's members must share the preprocessing spec (task, classes)."""
    ckpts = []
    for path in paths:
        try:
            ckpts.append(load_checkpoint(path))
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise _InputError(f"cannot load checkpoint {path}: {exc}") from exc
    for path, ckpt in zip(paths[1:], ckpts[1:], strict=True):
        if ckpt.spec != ckpts[0].spec:
            raise _InputError(
                f"checkpoint {path} has a different preprocessing spec than {paths[0]} "
                f"({ckpt.spec.to_json()} vs {ckpts[0].spec.to_json()}); ensemble members must share task, "
                "classes, window and input size"
            )
    return ckpts


def _user_metadata(parser: argparse.ArgumentParser, text: str, written: set[str]) -> dict[str, str]:
    """``--metadata`` as ``litseg.<key>`` entries; bad JSON or a key litseg writes itself is a usage error."""
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as exc:
        parser.error(f"--metadata is not valid JSON ({exc}); pass an object such as '{{\"test_dice\": 0.9}}'")
    if not isinstance(loaded, dict):
        parser.error(f"--metadata must be a JSON object; got {type(loaded).__name__}")
    entries = {f"litseg.{k}": v if isinstance(v, str) else json.dumps(v) for k, v in loaded.items()}
    clash = sorted(set(entries) & (RESERVED_METADATA_KEYS | written))
    if clash:
        parser.error(
            f"--metadata would replace {clash}, which litseg-export writes itself (the runtime's contract); "
            "use the dedicated flags (--name, --version, --tumor-margin-mm, --min-tumor-ml, --tta-shift-px) or "
            "other keys"
        )
    return entries


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="litseg-export", description="Export a litseg checkpoint, or an ensemble of them, to ONNX."
    )
    parser.add_argument(
        "checkpoint",
        type=Path,
        nargs="+",
        help="checkpoint; several make one ensemble model (mean of their softmax probabilities)",
    )
    parser.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    parser.add_argument("--name", default=None, help="model name (default: litseg-<task>)")
    parser.add_argument("--version", default="0.1.0", help="model version written into the metadata")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max |ONNX - PyTorch| on probabilities")
    parser.add_argument("--fp16", action="store_true", help="also write <out>-fp16.onnx (half-precision weights)")
    parser.add_argument(
        "--tumor-margin-mm",
        type=float,
        default=None,
        help="tumor margin calibrated on validation data, applied by litseg-run (litseg.postprocess)",
    )
    parser.add_argument(
        "--min-tumor-ml",
        type=float,
        default=None,
        help="smallest tumor component (mL) calibrated on validation data; litseg-run relabels smaller ones as "
        "liver (litseg.postprocess)",
    )
    parser.add_argument(
        "--tta-shift-px",
        type=int,
        default=None,
        help="test-time augmentation calibrated on validation data: litseg-run averages the unshifted pass and "
        "one with the input moved by this many model-grid pixels in y and x (litseg.inference)",
    )
    parser.add_argument("--metadata", default=None, help="JSON object of extra metadata (e.g. test metrics)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        ckpts = _load(args.checkpoint)
    except _InputError as exc:
        print(f"litseg-export: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    extra = _metadata(ckpts)
    postprocess: dict[str, float] = {}
    if args.tumor_margin_mm is not None:
        if not 0.0 <= args.tumor_margin_mm <= MAX_TUMOR_MARGIN_MM:
            parser.error(f"--tumor-margin-mm must be 0 to {MAX_TUMOR_MARGIN_MM} mm; got {args.tumor_margin_mm}")
        postprocess["tumor_margin_mm"] = args.tumor_margin_mm
    if args.min_tumor_ml is not None:
        if not 0.0 <= args.min_tumor_ml <= MAX_MIN_TUMOR_ML:
            parser.error(f"--min-tumor-ml must be 0 to {MAX_MIN_TUMOR_ML} mL; got {args.min_tumor_ml}")
        postprocess["min_tumor_ml"] = args.min_tumor_ml
    if postprocess:
        extra[POSTPROCESS_METADATA_KEY] = json.dumps(postprocess)
    if args.tta_shift_px is not None:
        if not 1 <= args.tta_shift_px <= MAX_TTA_SHIFT_PX:
            parser.error(f"--tta-shift-px must be 1 to {MAX_TTA_SHIFT_PX} pixels; got {args.tta_shift_px}")
        shift = args.tta_shift_px
        extra[INFERENCE_METADATA_KEY] = json.dumps({"tta_shifts_px": [[0, 0], [shift, shift]]})
    if args.metadata:
        extra.update(_user_metadata(parser, args.metadata, set(extra)))
    spec = ckpts[0].spec
    model = ckpts[0].model if len(ckpts) == 1 else MeanProbabilities([c.model for c in ckpts])
    name = args.name or f"litseg-{spec.task}"
    try:
        check = export_onnx(model, spec, args.out, name, args.version, extra, args.tolerance)
        report = {
            "out": str(args.out),
            "members": len(ckpts),
            "max_abs_diff": check.max_abs_diff,
            "argmax_agreement": check.argmax_agreement,
        }
        if args.fp16:
            fp16_path = args.out.with_name(args.out.stem + "-fp16.onnx")
            half = to_fp16(args.out, fp16_path, model, spec)
            report.update(
                {
                    "fp16_out": str(fp16_path),
                    "fp16_max_abs_diff": half.max_abs_diff,
                    "fp16_argmax_agreement": half.argmax_agreement,
                }
            )
    except ExportError as exc:
        print(f"litseg-export: error: {exc}", file=sys.stderr)
        return EXIT_MODEL
    except OSError as exc:
        print(f"litseg-export: error: cannot write {args.out}: {exc}", file=sys.stderr)
        return EXIT_OUTPUT
    print(json.dumps(report))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
