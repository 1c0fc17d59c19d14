"""The run folder's log: ``log.json``, ``log.csv`` and a PNG of the curves, rewritten after every epoch."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any


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
    keys = [k for k in history[0] if k == "train_loss" or (k.startswith("val_") and "_dice_" in k)]
    colors = ["black", "tab:blue", "red", "green", "orange", "purple", "brown", "magenta", "teal", "gray"]
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
