"""Issue 15's int8 evaluation: onnxruntime static quantisation of a litseg model, its speed and its answer.

The model is quantised with ``onnxruntime.quantization.quantize_static`` (QDQ, per-channel int8 weights,
uint8 activations) from a calibration set of training slices (litseg HDF5 files, exactly the runtime's
model input; of real slices, the training patients only), one variant per calibration method and weight
range. Each variant then runs the same held-out slices (of real slices, the validation patients) as the
fp32 model, in the same process, alternating, in batches of 8 with the runtime's session options (2
intra-op threads, spinning off); the report gives milliseconds per slice and the agreement of its labels
with the fp32 labels (foreground Dice and voxel agreement), the measure of issue 15's "within 0.005 of
the fp32 pass" rule.

Usage (the recipe's data sets; needs the ``export`` extra's ``onnx``)::

    python -m benchmarks.int8_eval runtime/models/liver-tumor.onnx \\
        --calibration build/models/liver-tumor.h5 --calibration build/models/msd-liver-tumor.h5 \\
        --held-out build/models/msd-liver-tumor.h5 --json build/int8-eval.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

BATCH = 8
VARIANTS = {  # name -> (calibration method, reduce_range: 7-bit weights, against AVX2's u8s8 saturation)
    "minmax": (CalibrationMethod.MinMax, False),
    "minmax-reduced": (CalibrationMethod.MinMax, True),
    "percentile": (CalibrationMethod.Percentile, False),
    "entropy": (CalibrationMethod.Entropy, False),
}


def draw(paths: Sequence[Path], per_file: int, split: str) -> npt.NDArray[np.float32]:
    """``per_file`` random slices of each file's ``images`` from the cases of ``split`` (``train`` or ``val``)
    where the file carries a patient split (real slices), else from any case, ``(n, 1, h, w)``."""
    out = []
    for path in paths:
        with h5py.File(path, "r") as f:
            candidates = np.arange(len(f["images"]))
            if "case_split" in f:
                cases = np.flatnonzero(f["case_split"][:].astype(str) == split)
                candidates = candidates[np.isin(f["case_index"][:], cases)]
            picks = np.random.default_rng(0).permutation(candidates)[:per_file]
            out.append(f["images"][np.sort(picks)])
    return np.concatenate(out)[:, None].astype(np.float32)


class _Reader(CalibrationDataReader):  # type: ignore[misc]
    def __init__(self, name: str, images: npt.NDArray[np.float32]) -> None:
        self.batches: Iterator[npt.NDArray[np.float32]] = iter(np.array_split(images, max(1, len(images) // BATCH)))
        self.name = name

    def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
        batch = next(self.batches, None)
        return None if batch is None else {self.name: batch}


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def labels_and_ms(sessions: dict[str, ort.InferenceSession], images: npt.NDArray[np.float32], repeats: int):  # type: ignore[no-untyped-def]
    """Labels of every session on ``images`` and the best of ``repeats`` ms per slice (sessions alternate)."""
    name = next(iter(sessions.values())).get_inputs()[0].name
    labels = {
        k: np.concatenate([s.run(None, {name: b})[0].argmax(1) for b in np.split(images, len(images) // BATCH)])
        for k, s in sessions.items()
    }
    best = {k: np.inf for k in sessions}
    batch = images[:BATCH]
    for _ in range(repeats):
        for k, s in sessions.items():
            start = time.perf_counter()
            s.run(None, {name: batch})
            best[k] = min(best[k], (time.perf_counter() - start) / BATCH * 1000)
    return labels, best


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--calibration", type=Path, action="append", required=True)
    parser.add_argument("--held-out", type=Path, action="append", required=True)
    parser.add_argument("--calibration-slices", type=int, default=32, help="per calibration file")
    parser.add_argument("--held-out-slices", type=int, default=64, help="per held-out file (a multiple of 8)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--variant", choices=sorted(VARIANTS), action="append", help="default: every variant")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    calibration = draw(args.calibration, args.calibration_slices, "train")
    held_out = draw(args.held_out, args.held_out_slices, "val")  # real slices: the validation patients
    with tempfile.TemporaryDirectory(prefix="litseg-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(args.model), str(prepared), skip_symbolic_shape=True)
        name = session(args.model).get_inputs()[0].name
        paths = {"fp32": args.model}
        for variant in args.variant or list(VARIANTS):
            method, reduce_range = VARIANTS[variant]
            paths[variant] = Path(tmp) / f"{variant}.onnx"
            quantize_static(
                str(prepared),
                str(paths[variant]),
                _Reader(name, calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=method,
            )
        labels, ms = labels_and_ms({k: session(p) for k, p in paths.items()}, held_out, args.repeats)
    ref = labels["fp32"] > 0
    result = {
        "model": str(args.model),
        "held_out_slices": len(held_out),
        "calibration_slices": len(calibration),
        "cpu_threads": 2,
        "variants": {},
    }
    for k in paths:
        fg = labels[k] > 0
        dice = 2 * float((fg & ref).sum()) / max(1, int(fg.sum() + ref.sum()))
        result["variants"][k] = {  # type: ignore[index]
            "ms_per_slice": round(ms[k], 1),
            "speed_vs_fp32": round(ms["fp32"] / ms[k], 2),
            "foreground_dice_vs_fp32": round(dice, 4),
            "voxel_agreement_vs_fp32": round(float((labels[k] == labels["fp32"]).mean()), 5),
        }
        print(f"{k:16s} {ms[k]:7.1f} ms/slice  x{ms['fp32'] / ms[k]:.2f}  foreground Dice vs fp32 {dice:.4f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
