"""The training loop: optimisation steps, per-set validation, checkpoints and logs, on one process or DDP."""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from .checkpoint import init_from, load_checkpoint, save_checkpoint
from .config import TrainConfig, scheduled_lr
from .dataset import SliceDataset
from .losses import compute_loss
from .run_log import write_logs
from .sampling import EpochSampler
from .training_sets import MixedSlices, TrainingSet, epoch_plan, open_sets, run_class_weights, run_summary
from .unet import UNet
from .validation import evaluate_dice, set_score

log = logging.getLogger(__name__)


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


def validate(
    model: UNet, sets: list[TrainingSet], config: TrainConfig, device: torch.device
) -> tuple[dict[str, float], float]:
    """Validation Dice of every set as log columns, and the score that picks the best epoch (the mean of
    the sets' scores). One set: ``val_dice_<class>``; several: ``val_<set>_dice_<class>`` each."""
    columns: dict[str, float] = {}
    scores = []
    class_names = sets[0].info.spec.class_names
    for s in sets:
        loader = DataLoader(SliceDataset(s.path, s.val_idx), batch_size=config.batch_size, num_workers=config.workers)
        dice = evaluate_dice(model, loader, class_names, device)
        prefix = "val_dice_" if len(sets) == 1 else f"val_{s.name}_dice_"
        columns.update({prefix + name: d for name, d in dice.items()})
        scores.append(set_score(dice, class_names))
    finite = [v for v in scores if not math.isnan(v)]
    return columns, float(np.mean(finite)) if finite else float("nan")


def _same_run(before: TrainConfig, now: TrainConfig) -> bool:
    """Whether ``now`` continues the run of ``before`` rather than starting a new phase on its weights."""
    ignored = ("resume", "init", "workers")
    return {k: v for k, v in vars(before).items() if k not in ignored} == {
        k: v for k, v in vars(now).items() if k not in ignored
    }


def train(config: TrainConfig, progress: bool = False, stop_after: int | None = None) -> Path:
    """Run training; returns the path of the best checkpoint (by the validation score: mean foreground Dice,
    averaged over the sets).

    ``stop_after`` ends the process after that epoch as an interruption would: the run keeps its schedule
    over ``config.epochs`` and a later resume with the same settings goes on where it stopped (a budget for
    one sitting, not a setting of the run)."""
    rank, world = _dist()
    torch.manual_seed(config.seed)
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    sets = open_sets(config)
    spec = sets[0].info.spec
    task = spec.task
    loss_name = config.loss or ("bce+dice" if task == "liver" else "ce+dice")
    plan = epoch_plan(sets, config)
    weights = (
        torch.tensor(config.class_weights, dtype=torch.float32)
        if config.class_weights
        else run_class_weights(sets, plan, config.weight_cap)
    )
    data = run_summary(sets, plan)
    train_set = MixedSlices(sets, config)
    # channels-last: oneDNN's and cuDNN's fast convolution layout (weights in checkpoints stay contiguous)
    model = UNet(spec.num_classes, config.base).to(device)
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit the argument
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    out = Path(config.out)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    schedule_start = 0  # the epoch the lr schedule counts from: a new phase decays over the epochs it adds
    best = -math.inf  # a resumed run replaces the best checkpoint only with a better epoch
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
        # The same run interrupted (same epochs, lr and schedule) goes on along its own schedule, so that an
        # interrupted run ends where the uninterrupted one would; a resume with new settings is a new phase.
        if not _same_run(ckpt.config, config):
            schedule_start = start_epoch
        history = list(ckpt.metrics.get("history", []))
        best = float(ckpt.metrics.get("best_val_mean_fg_dice", -math.inf))
    net: torch.nn.Module = _Logits(model)
    if world > 1:
        net = DistributedDataParallel(net)
    precision = autocast_dtype(device, config.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=precision == torch.float16)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        log.info(
            "task %s, loss %s, class weights %s (training cases only), %d train / %d val slices (%d / %d cases); "
            "per epoch %s samples from %s",
            task,
            loss_name,
            [round(float(w), 3) for w in weights],
            data["train_slices"],
            data["val_slices"],
            data["train_cases"],
            data["val_cases"],
            list(plan.draws),
            [s.path.name for s in sets],
        )
    weights = weights.to(device)
    best_path = out / "checkpoint-best.pt"
    ran_on = hardware(device, world)
    sampler = EpochSampler(plan, rank, world, encode_draws=True)
    last_epoch = config.epochs if stop_after is None else min(config.epochs, max(stop_after, start_epoch))
    for epoch in range(start_epoch, last_epoch):
        train_set.set_epoch(epoch)
        sampler.set_epoch(epoch)
        loader = DataLoader(
            train_set,
            batch_size=config.batch_size,
            sampler=sampler,
            num_workers=config.workers,
            drop_last=len(sampler) > config.batch_size,
        )
        net.train()
        started = time.perf_counter()
        losses = []
        steps = max(len(loader), 1)
        batches = tqdm(loader, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress or rank != 0)
        for step, (image, mask) in enumerate(batches):
            done = (epoch - schedule_start + step / steps) / (config.epochs - schedule_start)
            for group in optimizer.param_groups:
                group["lr"] = scheduled_lr(config.lr, config.lr_schedule, done)
            image, mask = image.to(device, memory_format=torch.channels_last), mask.to(device)
            loss = training_step(net, optimizer, scaler, precision, image, mask, loss_name, weights)
            losses.append(float(loss))
        if rank == 0:
            dice, score = validate(model, sets, config, device)
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
                **dice,
                "val_score": score,
            }
            history.append(row)
            metrics = {
                "history": history,
                "best_val_mean_fg_dice": max(best, score),
                "data": data,
                "class_weights": [float(w) for w in weights],
            }
            save_checkpoint(out / "checkpoint-last.pt", model, optimizer, config, spec, epoch + 1, metrics)
            if score > best:
                best = score
                save_checkpoint(best_path, model, None, config, spec, epoch + 1, metrics)
            write_logs(out, history)
            log.info(
                "epoch %d: loss %.4f, val dice %s, score %.4f (%.0f s)",
                epoch + 1,
                row["train_loss"],
                {k.removeprefix("val_"): round(v, 4) for k, v in dice.items()},
                score,
                row["seconds"],
            )
        if world > 1:
            dist.barrier()
    if world > 1:
        dist.destroy_process_group()
    return best_path
