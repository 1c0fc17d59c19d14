"""Training checkpoints: weights + config + preprocessing spec + metrics, loaded without arbitrary pickles."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from litseg.runtime.spec import PreprocessSpec

from .config import TrainConfig
from .unet import UNet

CHECKPOINT_FORMAT = 1


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


def _config(raw_json: str) -> TrainConfig:
    """The run's config; fields of other litseg versions are dropped, a single ``data`` path is a set of one."""
    known = {f.name for f in fields(TrainConfig)}
    raw = {k: v for k, v in json.loads(raw_json).items() if k in known}
    for key in ("class_weights", "mix"):
        if raw.get(key) is not None:
            raw[key] = tuple(raw[key])
    raw["data"] = (raw["data"],) if isinstance(raw["data"], str) else tuple(raw["data"])
    return TrainConfig(**raw)


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
    return Checkpoint(
        model,
        _config(state["config"]),
        PreprocessSpec.from_json(state["spec"]),
        int(state["epoch"]),
        json.loads(state["metrics"]),
        state["optimizer"],
    )


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
