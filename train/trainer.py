"""``litseg-train``: train the U-Net on an HDF5 set from ``litseg-prepare``.

Seed defaults (Adam, lr 1e-4, 10 epochs, base width 64); weighted losses with class weights from the
set's class frequencies; patient-wise validation with per-class Dice each epoch; checkpoints holding
weights + config + preprocessing spec, loaded with ``torch.load(weights_only=True)`` (no arbitrary
pickles) and resumable; JSON/CSV log and a PNG of the curves; AMP on CUDA; DDP under ``torchrun``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, WeightedRandomSampler
from tqdm import tqdm

from litseg.runtime.spec import PreprocessSpec

from .data import Augment, Crop, SliceDataset, data_summary, patient_split, read_info
from .losses import LOSSES, class_weights, compute_loss
from .unet import UNet

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = 1
LR_SCHEDULES = ("constant", "poly")


def scheduled_lr(lr: float, schedule: str, progress: float) -> float:
    """The learning rate at ``progress`` (0 at the run's first step, 1 after its last)."""
    if schedule == "poly":
        return lr * float(max(0.0, 1.0 - progress) ** 0.9)
    return lr


@dataclass(frozen=True)
class TrainConfig:
    """One training run; the CLI has one flag per field."""

    data: str
    out: str
    task: str | None = None  # None: the task of the HDF5 set
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-4
    lr_schedule: str = "constant"  # or "poly": lr * (1 - progress) ** 0.9 over this run's epochs (nnU-Net)
    base: int = 64
    loss: str | None = None  # None: bce+dice for liver, ce+dice for liver-tumor
    class_weights: tuple[float, ...] | None = None  # None: from the set's class frequencies
    weight_cap: float = 1000.0  # computed weights are capped at this multiple of the smallest
    val_fraction: float = 0.2
    slices_per_epoch: int | None = None  # None: every training slice once per epoch
    rare_class_boost: float = 1.0  # sampling weight of slices showing the rarest class (tumor); 1 = uniform
    crop: int | None = None  # train on random square patches of this many pixels; None: whole slices
    crop_foreground: float = 0.5  # fraction of patches centred on the rarest class the slice shows
    augment: bool = True
    seed: int = 0
    workers: int = 0
    amp: bool = True  # mixed precision: fp16 on CUDA, bf16 on CPUs with native bf16 (AVX512-BF16 / AMX)
    resume: str | None = None
    init: str | None = None  # start from another run's weights (fine-tuning); tensors whose shape differs stay new

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.base < 1 or not self.lr > 0:
            raise ValueError(
                f"epochs, batch_size and base must be >= 1 and lr > 0; got {self.epochs}, {self.batch_size}, "
                f"{self.base}, {self.lr}"
            )
        if self.loss is not None and self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}; got {self.loss!r}")
        if self.weight_cap < 1.0:
            raise ValueError(f"weight_cap must be >= 1; got {self.weight_cap}")
        if self.rare_class_boost < 1.0:
            raise ValueError(f"rare_class_boost must be >= 1; got {self.rare_class_boost}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}; got {self.lr_schedule!r}")
        if self.crop is not None:
            Crop(self.crop, self.crop_foreground)  # validates
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1); got {self.val_fraction}")


def save_checkpoint(
    path: Path,
    model: UNet,
    optimizer: torch.optim.Optimizer | None,
    config: TrainConfig,
    spec: PreprocessSpec,
    epoch: int,
    metrics: dict[str, Any],
) -> None:
    """Weights + optimizer + config + spec + metrics; written atomically."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "config": json.dumps(asdict(config)),
        "spec": spec.to_json(),
        "architecture": json.dumps({"name": "unet2d", "base": model.base, "num_classes": model.num_classes}),
        "epoch": epoch,
        "metrics": json.dumps(metrics),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Checkpoint:
    model: UNet
    config: TrainConfig
    spec: PreprocessSpec
    epoch: int
    metrics: dict[str, Any]
    optimizer_state: dict[str, Any]


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint safely (``weights_only``: tensors and plain values, never arbitrary objects)."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises UnpicklingError, KeyError, EOFError, RuntimeError for bad files
        raise ValueError(f"{path} is not a loadable litseg checkpoint (refused or corrupt): {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a litseg checkpoint (format {CHECKPOINT_FORMAT})")
    arch = json.loads(state["architecture"])
    model = UNet(num_classes=int(arch["num_classes"]), base=int(arch["base"]))
    model.load_state_dict(state["model"])
    known = {f.name for f in fields(TrainConfig)}
    raw = {k: v for k, v in json.loads(state["config"]).items() if k in known}
    if raw.get("class_weights") is not None:
        raw["class_weights"] = tuple(raw["class_weights"])
    return Checkpoint(
        model,
        TrainConfig(**raw),
        PreprocessSpec.from_json(state["spec"]),
        int(state["epoch"]),
        json.loads(state["metrics"]),
        state["optimizer"],
    )


class _Logits(torch.nn.Module):
    """Training view of the U-Net: forward gives logits (the losses apply their own softmax)."""

    def __init__(self, unet: UNet) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet.logits(x)


def training_step(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    precision: torch.dtype | None,
    image: torch.Tensor,
    mask: torch.Tensor,
    loss_name: str,
    weights: torch.Tensor,
) -> torch.Tensor:
    """One optimisation step (forward under autocast at ``precision``, fp32 loss); returns the loss."""
    with torch.autocast(image.device.type, dtype=precision, enabled=precision is not None):
        logits = net(image)
        loss = compute_loss(loss_name, logits.float(), mask, weights)
    optimizer.zero_grad(set_to_none=True)
    scaled: torch.Tensor = scaler.scale(loss)
    scaled.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def _dist() -> tuple[int, int]:
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.no_grad()
def evaluate_dice(model: UNet, loader: DataLoader[Any], num_classes: int, device: torch.device) -> list[float]:
    """Global Dice per class (argmax prediction) over a loader."""
    model.eval()
    inter = torch.zeros(num_classes, dtype=torch.float64)
    total = torch.zeros(num_classes, dtype=torch.float64)
    for image, mask in loader:
        pred = model.logits(image.to(device, memory_format=torch.channels_last)).argmax(1).cpu()
        for c in range(num_classes):
            p, t = pred == c, mask == c
            inter[c] += (p & t).sum()
            total[c] += p.sum() + t.sum()
    return [float(2 * i / t) if t > 0 else float("nan") for i, t in zip(inter, total, strict=True)]


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The reduced precision of training steps under ``amp``: fp16 on CUDA (with a gradient scaler), bf16 on
    CPUs that compute it natively (AVX512-BF16 / AMX: 2.4x the fp32 step rate of the base-16 U-Net on this
    project's development machines, with channels-last); None (fp32) elsewhere, where emulated bf16 is slower.
    Weights, the loss and validation stay fp32."""
    if not amp:
        return None
    if device.type == "cuda":
        return torch.float16
    bf16_native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return torch.bfloat16 if device.type == "cpu" and bf16_native else None


def hardware(device: torch.device, world: int) -> str:
    """What an epoch ran on, for the log and the model card: e.g. ``2 x NVIDIA H100 80GB HBM3`` or
    ``CPU, 2 threads`` (per process; ``2 processes x CPU, 1 threads`` under torchrun)."""
    if device.type == "cuda":
        return f"{world} x {torch.cuda.get_device_name(device)}"
    cpu = f"CPU, {torch.get_num_threads()} threads"
    return f"{world} processes x {cpu}" if world > 1 else cpu


def init_from(model: UNet, source: UNet) -> list[str]:
    """Copy every tensor of ``source`` whose name and shape match into ``model`` (e.g. all but the head
    when the class count differs); returns the names left as initialised."""
    own = model.state_dict()
    theirs = source.state_dict()
    matched = {k: v for k, v in theirs.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise ValueError(f"no weights of the init checkpoint fit this model (base {model.base} vs {source.base})")
    model.load_state_dict({**own, **matched})
    return sorted(set(own) - set(matched))


def epoch_sampler(rare_slices: np.ndarray, n: int, boost: float, seed: int) -> Any:
    """``n`` training slice positions for one epoch; slices flagged in ``rare_slices`` weigh ``boost``."""
    g = torch.Generator().manual_seed(seed)
    if boost > 1.0:
        weights_per_slice = 1.0 + (boost - 1.0) * np.asarray(rare_slices, dtype=float)
        return WeightedRandomSampler(weights_per_slice.tolist(), n, replacement=True, generator=g)
    return RandomSampler(range(len(rare_slices)), num_samples=n, generator=g)


def train(config: TrainConfig, progress: bool = False) -> Path:
    """Run training; returns the path of the best checkpoint (by mean foreground validation Dice)."""
    rank, world = _dist()
    torch.manual_seed(config.seed)
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    info = read_info(Path(config.data))
    task = config.task or info.task
    if task != info.task:
        raise ValueError(f"--task {task} does not match the HDF5 set's task {info.task}; prepare it for {task}")
    spec = info.spec
    loss_name = config.loss or ("bce+dice" if task == "liver" else "ce+dice")
    weights = (
        torch.tensor(config.class_weights, dtype=torch.float32)
        if config.class_weights
        else class_weights(info.class_voxels, max_ratio=config.weight_cap)
    )
    train_idx, val_idx = patient_split(info, config.val_fraction, config.seed)
    data = data_summary(Path(config.data), info, train_idx, val_idx)
    crop = Crop(config.crop, config.crop_foreground) if config.crop else None
    train_set = SliceDataset(
        Path(config.data), train_idx, Augment() if config.augment else None, config.seed, crop=crop
    )
    val_set = SliceDataset(Path(config.data), val_idx)
    # channels-last: oneDNN's and cuDNN's fast convolution layout (weights in checkpoints stay contiguous)
    model = UNet(spec.num_classes, config.base).to(device)
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit the argument
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    out = Path(config.out)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    resumed_best = -math.inf
    if config.init and not config.resume:
        skipped = init_from(model, load_checkpoint(config.init).model)
        if rank == 0:
            log.info("weights from %s; kept new: %s", config.init, ", ".join(skipped) or "none")
    if config.resume:
        ckpt = load_checkpoint(config.resume)
        model.load_state_dict(ckpt.model.state_dict())
        if ckpt.optimizer_state:
            optimizer.load_state_dict(ckpt.optimizer_state)
            for group in optimizer.param_groups:  # the run's own lr applies from here on (a schedule by resuming)
                group["lr"] = config.lr
        start_epoch = ckpt.epoch
        history = list(ckpt.metrics.get("history", []))
        resumed_best = float(ckpt.metrics.get("best_val_mean_fg_dice", -math.inf))
    net: torch.nn.Module = _Logits(model)
    if world > 1:
        net = DistributedDataParallel(net)
    precision = autocast_dtype(device, config.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == torch.float16)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        log.info(
            "task %s, loss %s, class weights %s, %d train / %d val slices (%d / %d cases)",
            task,
            loss_name,
            [round(float(w), 3) for w in weights],
            data["train_slices"],
            data["val_slices"],
            data["train_cases"],
            data["val_cases"],
        )
    rare_slices = np.zeros(len(train_idx))
    if config.rare_class_boost > 1.0:
        with h5py.File(config.data, "r") as f:
            masks = f["masks"]
            rare_slices = np.array([masks[int(i)].max() == spec.num_classes - 1 for i in train_idx], dtype=float)
    val_loader = DataLoader(val_set, batch_size=config.batch_size, num_workers=config.workers)
    weights = weights.to(device)
    best = resumed_best  # a resumed run replaces the best checkpoint only with a better epoch
    best_path = out / "checkpoint-best.pt"
    ran_on = hardware(device, world)
    for epoch in range(start_epoch, config.epochs):
        train_set.epoch = epoch
        if world > 1:
            sampler: Any = DistributedSampler(train_set, seed=config.seed)
            sampler.set_epoch(epoch)
        else:
            n = config.slices_per_epoch or len(train_set)
            sampler = epoch_sampler(rare_slices, n, config.rare_class_boost, config.seed + epoch)
        loader = DataLoader(
            train_set,
            batch_size=config.batch_size,
            sampler=sampler,
            num_workers=config.workers,
            drop_last=len(train_set) > config.batch_size,
        )
        net.train()
        started = time.perf_counter()
        losses = []
        steps = max(len(loader), 1)
        batches = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress or rank != 0)
        for step, (image, mask) in enumerate(batches):
            done = (epoch - start_epoch + step / steps) / (config.epochs - start_epoch)
            for group in optimizer.param_groups:
                group["lr"] = scheduled_lr(config.lr, config.lr_schedule, done)
            image, mask = image.to(device, memory_format=torch.channels_last), mask.to(device)
            loss = training_step(net, optimizer, scaler, precision, image, mask, loss_name, weights)
            losses.append(float(loss))
        if rank == 0:
            dice = evaluate_dice(model, val_loader, spec.num_classes, device)
            row = {
                "epoch": epoch + 1,
                "lr": config.lr,
                "lr_schedule": config.lr_schedule,
                "patch": config.crop or spec.target_shape_yx[0],
                "samples": len(loader) * config.batch_size * world,
                "precision": str(precision or torch.float32).removeprefix("torch."),
                "hardware": ran_on,
                "train_loss": float(np.mean(losses)) if losses else float("nan"),
                "seconds": round(time.perf_counter() - started, 1),
                **{f"val_dice_{name}": d for name, d in zip(spec.class_names, dice, strict=True)},
            }
            history.append(row)
            score = float(np.nanmean(dice[1:]))
            metrics = {"history": history, "best_val_mean_fg_dice": max(best, score), "data": data}
            save_checkpoint(out / "checkpoint-last.pt", model, optimizer, config, spec, epoch + 1, metrics)
            if score > best:
                best = score
                save_checkpoint(best_path, model, None, config, spec, epoch + 1, metrics)
            write_logs(out, history)
            log.info(
                "epoch %d: loss %.4f, val dice %s (%.0f s)",
                epoch + 1,
                row["train_loss"],
                [round(d, 4) for d in dice],
                row["seconds"],
            )
        if world > 1:
            dist.barrier()
    if world > 1:
        dist.destroy_process_group()
    return best_path


def write_logs(out: Path, history: list[dict[str, Any]]) -> None:
    """log.json, log.csv and curves.png in the run folder."""
    (out / "log.json").write_text(json.dumps(history, indent=1) + "\n")
    with open(out / "log.csv", "w", newline="") as f:
        columns = list(dict.fromkeys(k for row in history for k in row))  # rows of older runs lack newer keys
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
    plot_curves(history, out / "curves.png")


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    """A small line chart (PIL): training loss and validation Dice per class against epochs."""
    from PIL import Image, ImageDraw

    width, height, pad = 640, 360, 40
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle([pad, pad, width - pad, height - pad], outline="black")
    keys = [k for k in history[0] if k == "train_loss" or k.startswith("val_dice_")]
    colors = ["black", "tab:blue", "red", "green", "orange", "purple"]
    palette = {"tab:blue": "blue"}
    n = max(len(history) - 1, 1)
    for key, color in zip(keys, colors, strict=False):
        values = [float(r[key]) for r in history]
        top = max(1.0, max(v for v in values if not math.isnan(v)) if any(not math.isnan(v) for v in values) else 1)
        points = [
            (pad + (width - 2 * pad) * i / n, height - pad - (height - 2 * pad) * (v / top))
            for i, v in enumerate(values)
            if not math.isnan(v)
        ]
        if len(points) > 1:
            draw.line(points, fill=palette.get(color, color), width=2)
        draw.text((pad + 5, pad + 5 + 12 * keys.index(key)), key, fill=palette.get(color, color))
    draw.text((pad, height - pad + 8), f"epochs 1..{len(history)}", fill="black")
    img.save(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="litseg-train", description="Train the litseg U-Net on an HDF5 set.")
    parser.add_argument("--data", required=True, help="HDF5 set from litseg-prepare")
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
    parser.add_argument("--val-fraction", type=float, default=TrainConfig.val_fraction)
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
        values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.name != "class_weights"}
        config = TrainConfig(**values, class_weights=weights)
    except ValueError as exc:
        parser.error(str(exc))
    best = train(config, progress=sys.stderr.isatty())
    print(json.dumps({"best_checkpoint": str(best)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
