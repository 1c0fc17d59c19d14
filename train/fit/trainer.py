"""``litseg-train``: train the U-Net on one or more HDF5 sets from ``litseg-prepare`` / ``litseg-prepare-real``.

Seed defaults (Adam, lr 1e-4, 10 epochs, base width 64); weighted losses with class weights from the
training cases' class frequencies; several sets mixed at a chosen ratio (``--data A --data B --mix
0.6,0.4``), each validated patient-wise on its own; liver-or-tumor (merged) masks trained with the
marginal loss; checkpoints holding weights + config + preprocessing spec, loaded with
``torch.load(weights_only=True)`` (no arbitrary pickles) and resumable; JSON/CSV log and a PNG of the
curves; AMP on CUDA and bf16 CPUs; DDP under ``torchrun`` (the same epoch sample, sharded).

The parts live in :mod:`.config`, :mod:`.checkpoint`, :mod:`.training_sets`, :mod:`.sampling`,
:mod:`.validation`, :mod:`.loop` and :mod:`.run_log`; this module is the command line (``python -m
litseg.train.fit.trainer``, ``torchrun -m litseg.train.fit.trainer``) and keeps their public names importable
from here.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import fields

import torch

from litseg.runtime.errors import LitsegError

from .checkpoint import CHECKPOINT_FORMAT, Checkpoint, init_from, load_checkpoint, save_checkpoint
from .config import LR_SCHEDULES, TrainConfig, scheduled_lr
from .loop import _Logits, autocast_dtype, hardware, train, training_step
from .losses import LOSSES
from .run_log import plot_curves, write_logs
from .sampling import EpochPlan, EpochSampler

__all__ = [
    "CHECKPOINT_FORMAT",
    "LR_SCHEDULES",
    "Checkpoint",
    "EpochPlan",
    "EpochSampler",
    "TrainConfig",
    "_Logits",
    "autocast_dtype",
    "hardware",
    "init_from",
    "load_checkpoint",
    "main",
    "plot_curves",
    "save_checkpoint",
    "scheduled_lr",
    "train",
    "training_step",
    "write_logs",
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="litseg-train", description="Train the litseg U-Net on an HDF5 set.")
    parser.add_argument(
        "--data",
        required=True,
        action="append",
        help="HDF5 set from litseg-prepare or litseg-prepare-real; repeat to mix several (same preprocessing spec)",
    )
    parser.add_argument(
        "--mix",
        default=None,
        help="share of each epoch's samples per --data set, e.g. 0.6,0.4 (default: in proportion to their "
        "training slices); each set keeps its own patient-wise validation split and log columns",
    )
    parser.add_argument("--out", required=True, help="run folder (checkpoints, logs, curves)")
    parser.add_argument("--task", choices=("liver", "liver-tumor"), default=None)
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default=TrainConfig.lr_schedule,
        help="poly: decay to 0 over this run's epochs (a resumed run decays over the epochs it adds)",
    )
    parser.add_argument("--base", type=int, default=TrainConfig.base, help="channels of the first block (seed: 64)")
    parser.add_argument("--loss", choices=LOSSES, default=None)
    parser.add_argument("--class-weights", default=None, help="comma-separated, one per class (default: from data)")
    parser.add_argument(
        "--weight-cap",
        type=float,
        default=TrainConfig.weight_cap,
        help="cap of computed class weights, as a multiple of the smallest",
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=TrainConfig.val_fraction,
        help="validation cases per set (a set that records its split, such as MSD's, keeps it)",
    )
    parser.add_argument("--slices-per-epoch", type=int, default=None)
    parser.add_argument(
        "--rare-class-boost",
        type=float,
        default=1.0,
        help="sample slices showing the rarest class (tumor) this many times more often",
    )
    parser.add_argument(
        "--crop",
        type=int,
        default=None,
        help="train on random square patches of this many pixels (multiple of 16; default: whole slices)",
    )
    parser.add_argument(
        "--crop-foreground",
        type=float,
        default=TrainConfig.crop_foreground,
        help="fraction of patches centred on the rarest class in the slice (tumor, else liver)",
    )
    parser.add_argument("--no-augment", dest="augment", action="store_false")
    parser.add_argument(
        "--augment-scale",
        default=",".join(f"{v:g}" for v in TrainConfig.augment_scale),
        help="zoom range of the augmentation, LOW,HIGH (> 1 enlarges); e.g. 0.8,1.35 spans the fields of view "
        "scanners reconstruct (300-500 mm)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument(
        "--no-amp",
        dest="amp",
        action="store_false",
        help="train in fp32 (default: fp16 on CUDA, bf16 on CPUs with native bf16)",
    )
    parser.add_argument("--resume", default=None, help="checkpoint to continue from")
    parser.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="end after this epoch as an interruption would (the lr schedule still spans --epochs; resume "
        "with the same flags to go on)",
    )
    parser.add_argument(
        "--init",
        default=None,
        help="checkpoint whose weights start this run (fine-tuning; layers whose shape differs, such as the "
        "head of another task, start new)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        weights = tuple(float(w) for w in args.class_weights.split(",")) if args.class_weights else None
        mix = tuple(float(m) for m in args.mix.split(",")) if args.mix else None
        zoom = [float(v) for v in args.augment_scale.split(",")]
        if len(zoom) != 2:
            raise ValueError(f"--augment-scale needs two zoom factors LOW,HIGH; got {args.augment_scale!r}")
        scale = (zoom[0], zoom[1])
        special = ("class_weights", "mix", "data", "augment_scale")
        values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.name not in special}
        config = TrainConfig(data=tuple(args.data), **values, class_weights=weights, mix=mix, augment_scale=scale)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        best = train(config, progress=sys.stderr.isatty(), stop_after=args.stop_after)
    except LitsegError as exc:  # sets that cannot be trained together, a test-only set, a wrong task
        print(f"litseg-train: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps({"best_checkpoint": str(best)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
