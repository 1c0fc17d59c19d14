"""The GPU path, ready to prove (issue 15): run by ``bash benchmarks/gpu_check.sh`` on a GPU machine.

1. Environment: Python packages present or missing, ``nvidia-smi``, PyTorch's CUDA device, onnxruntime's
   providers.
2. Model: the bundled default model rebuilt in PyTorch from its ONNX initializers; its output against
   onnxruntime's on the CPU (max |difference|).
3. Model throughput at 256x256 in slices/s (target >= 1000 on an H100-class GPU): onnxruntime CUDA /
   TensorRT when the machine's onnxruntime has those providers; always PyTorch (fp32, TF32, fp16 and bf16
   autocast), which is a STAND-IN for onnxruntime CUDA where that is missing, and labelled so.
4. End to end on a 512x512xN phantom series (N = 432 by default; needs litseg's runtime to import:
   pydicom, highdicom, nibabel, numba): ``segment`` + ``write_results`` on onnxruntime CPU as the reference;
   on onnxruntime CUDA/TensorRT where present; and with the model calls routed to the PyTorch stand-in.
   GPU labels must agree with CPU labels (Dice >= 0.999 per class); target <= 3 s for 432 slices.

Whatever is missing is reported and skipped; nothing needs the network. Results: ``gpu_check.json`` and
``gpu_check.txt`` in ``$OUT`` when set (the device tool collects it), else in ``build/gpu-check/``.
``--cpu`` (or ``LITSEG_GPU_CHECK_DEVICE=cpu``) is a dry run on the CPU with small sizes: the figures then
mean nothing, only that every step runs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.gpu_summary import summary

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "runtime" / "models" / "liver-tumor.onnx"
PACKAGES = ("numpy", "numba", "scipy", "PIL", "cv2", "onnx", "onnxruntime", "torch", "pydicom", "highdicom", "nibabel")
TARGET_SLICES_PER_S = 1000.0
TARGET_END_TO_END_S = 3.0
DICE_MIN = 0.999
PARITY_MAX = 1e-4


class SkipSectionError(Exception):
    """A section cannot run on this machine (the reason is reported, not an error)."""


class Check:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.start = time.perf_counter()
        self.results: dict[str, Any] = {"dry_run_on_cpu": args.cpu, "slices": args.slices, "rows": args.rows}
        self.state: dict[str, Any] = {}

    def log(self, message: str) -> None:
        print(f"[gpu-check {time.perf_counter() - self.start:6.1f} s] {message}", flush=True)

    def time_left_s(self) -> float:
        return float(self.args.budget_s - (time.perf_counter() - self.start))

    def section(self, name: str, run: Callable[[], dict[str, Any]]) -> None:
        if self.time_left_s() < 30:
            self.results[name] = {"status": "skipped", "reason": f"time budget spent ({self.args.budget_s:.0f} s)"}
            self.log(f"{name}: skipped, time budget spent")
            return
        self.log(f"{name} ...")
        try:
            self.results[name] = {"status": "ok", **run()}
        except SkipSectionError as exc:
            self.results[name] = {"status": "skipped", "reason": str(exc)}
            self.log(f"{name}: skipped: {exc}")
        except Exception as exc:  # a check must report what broke and go on with the next section
            self.results[name] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
            self.results[name]["traceback"] = traceback.format_exc()[-3000:]
            self.log(f"{name}: FAILED: {type(exc).__name__}: {exc}")


def _version(name: str) -> str:
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # ImportError, or a broken binary dependency (OSError)
        return f"missing ({type(exc).__name__}: {str(exc)[:120]})"
    return str(getattr(module, "__version__", "present"))


def environment(check: Check) -> dict[str, Any]:
    facts: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform()}
    facts["packages"] = {name: _version(name) for name in PACKAGES}
    facts["cpus"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
        proc = subprocess.run(query, capture_output=True, text=True, timeout=60, check=False)
        facts["nvidia_smi"] = (proc.stdout or proc.stderr).strip()
    else:
        facts["nvidia_smi"] = "not found"
    try:
        import onnxruntime as ort

        facts["onnxruntime_providers"] = ort.get_available_providers()
    except Exception as exc:
        facts["onnxruntime_providers"] = []
        facts["onnxruntime_error"] = f"{type(exc).__name__}: {exc}"
    try:
        import torch

        facts["torch_cuda"] = torch.version.cuda
        facts["torch_cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            facts["torch_device"] = torch.cuda.get_device_name(0)
            facts["cudnn"] = torch.backends.cudnn.version()  # type: ignore[no-untyped-call]
    except Exception as exc:
        facts["torch_error"] = f"{type(exc).__name__}: {exc}"
    try:
        import litseg.runtime.api  # noqa: F401  (the public API pulls in pydicom, highdicom, nibabel)

        facts["litseg_runtime"] = "importable"
    except Exception as exc:
        facts["litseg_runtime"] = f"not importable ({type(exc).__name__}: {exc}): end to end not measured"
    ort_cuda = "CUDAExecutionProvider" in facts["onnxruntime_providers"]
    facts["onnxruntime_cuda"] = ort_cuda
    if not ort_cuda:
        facts["note"] = (
            "onnxruntime on this machine has NO CUDA provider: the GPU figures below come from the same "
            "exported network run through PyTorch CUDA, a STAND-IN for onnxruntime CUDA"
        )
    check.state.update(ort_cuda=ort_cuda, runtime=facts["litseg_runtime"] == "importable")
    if check.args.cpu:
        check.state["device"] = "cpu"
    elif facts.get("torch_cuda_available"):
        check.state["device"] = "cuda"
    for key in ("nvidia_smi", "onnxruntime_providers", "torch_device", "litseg_runtime", "note"):
        if key in facts:
            check.log(f"  {key}: {facts[key]}")
    return facts


def standin_model(check: Check) -> dict[str, Any]:
    from litseg.export.onnx_unet import unet_from_onnx

    rebuilt = unet_from_onnx(check.args.model)
    check.state["standin"] = rebuilt
    facts: dict[str, Any] = {"base": rebuilt.base, "classes": rebuilt.num_classes, "members": rebuilt.members}
    try:
        import onnxruntime as ort
    except Exception as exc:
        facts["parity"] = f"not checked: onnxruntime missing ({exc})"
        return facts
    import torch

    x = np.random.default_rng(0).random((2, 1, *rebuilt.spec["target_shape_yx"]), dtype=np.float32)
    session = ort.InferenceSession(str(check.args.model), providers=["CPUExecutionProvider"])
    (reference,) = session.run(None, {session.get_inputs()[0].name: x})
    with torch.inference_mode():
        mine = rebuilt.network(torch.from_numpy(x)).numpy()
    diff = float(np.abs(mine - reference).max())
    facts.update(parity_max_abs_diff=diff, parity_ok=diff <= PARITY_MAX)
    check.log(
        f"  PyTorch rebuild vs onnxruntime (CPU): max |diff| {diff:.2e} (<= {PARITY_MAX:g}: {diff <= PARITY_MAX})"
    )
    return facts


def throughput(check: Check) -> dict[str, Any]:
    from benchmarks import gpu_standin

    device = check.state.get("device")
    if device is None:
        raise SkipSectionError(
            "no CUDA device visible to PyTorch (torch.cuda.is_available() is False); use --cpu for a dry run"
        )
    if "standin" not in check.state:
        raise SkipSectionError("the PyTorch rebuild of the model failed (see standin_model)")
    rebuilt = check.state["standin"]
    network = gpu_standin.prepare(rebuilt.network, device)
    shape = tuple(rebuilt.spec["target_shape_yx"])
    rows = []
    for mode in gpu_standin.modes_for(device):
        for batch in check.args.throughput_batches:
            row = {
                "mode": mode,
                "batch": batch,
                **gpu_standin.throughput(network, device, mode, batch, shape, check.args.seconds),
            }
            rows.append(row)
            check.log(f"  PyTorch {device} {mode:14s} batch {batch:4d}: {row['slices_per_s']:9.1f} slices/s")
    best = max(rows, key=lambda r: r["slices_per_s"])
    facts: dict[str, Any] = {"engine": f"PyTorch {device} (stand-in)", "rows": rows, "best": best}
    facts["target_met"] = best["slices_per_s"] >= TARGET_SLICES_PER_S
    if check.state.get("ort_cuda") and device == "cuda":
        facts["onnxruntime_cuda"] = _ort_throughput(check, shape)
    return facts


def _ort_throughput(check: Check, shape: tuple[int, ...]) -> dict[str, Any]:
    import onnxruntime as ort

    rows: dict[str, dict[str, Any]] = {}
    for provider in ("TensorrtExecutionProvider", "CUDAExecutionProvider"):
        if provider not in ort.get_available_providers():
            continue
        session = ort.InferenceSession(str(check.args.model), providers=[provider, "CPUExecutionProvider"])
        if session.get_providers()[0] != provider:
            rows[provider] = {"error": f"fell back to {session.get_providers()[0]}"}
            continue
        batch = max(check.args.throughput_batches)
        x = np.random.default_rng(0).random((batch, 1, *shape), dtype=np.float32)
        name = session.get_inputs()[0].name
        for _ in range(3):
            session.run(None, {name: x})
        start, runs = time.perf_counter(), 0
        while time.perf_counter() - start < check.args.seconds or runs < 3:
            session.run(None, {name: x})
            runs += 1
        rate = batch * runs / (time.perf_counter() - start)
        rows[provider] = {"batch": batch, "slices_per_s": rate, "with_host_copies": True}
        check.log(f"  onnxruntime {provider} batch {batch}: {rate:.1f} slices/s (host copies included)")
    return rows


def dice(a: np.ndarray, b: np.ndarray, label: int) -> float:
    x, y = a == label, b == label
    total = int(x.sum()) + int(y.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(x, y).sum()) / total


def _agreement(reference: np.ndarray, other: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    scores = {name: dice(reference, other, k) for k, name in enumerate(classes) if k > 0}
    return {"dice": scores, "agree": all(v >= DICE_MIN for v in scores.values())}


def _segment_timed(folder: Path, config: Any, model: Any = None) -> tuple[Any, float]:
    from litseg.runtime import segment, write_results

    start = time.perf_counter()
    result = segment(folder, config, model=model)
    with tempfile.TemporaryDirectory() as tmp:
        write_results(result, Path(tmp) / "out")
    return result, time.perf_counter() - start


def end_to_end(check: Check) -> dict[str, Any]:
    if not check.state.get("runtime"):
        raise SkipSectionError(
            "litseg's runtime does not import here (see environment.litseg_runtime): model throughput only"
        )
    from benchmarks.series_cache import cached_series
    from litseg.runtime import Model, RunConfig
    from litseg.runtime.pages import prefer_small_pages

    prefer_small_pages()  # the process settings of litseg-run, for an end-to-end like the CLI's
    try:
        from litseg.runtime.kernels import warmup

        check.log(f"  numba kernels: {warmup():.1f} s to compile or load")
    except ImportError as exc:
        check.log(f"  numba kernels compile on first use (no kernels.warmup: {exc})")
    series = cached_series(check.args.slices, check.args.rows)
    check.state["cpu_model"] = Model(check.args.model, device="cpu")
    classes = check.state["cpu_model"].spec.class_names
    facts: dict[str, Any] = {"series": str(series.folder), "shape_zyx": list(series.shape_zyx)}
    cpu, cpu_wall = _segment_timed(series.folder, RunConfig(model=check.args.model, device="cpu"))
    labels = np.asarray(cpu.labels.array)
    facts["cpu_onnxruntime"] = {"wall_s": cpu_wall, "timings_s": dict(cpu.timings_s), "provider": cpu.provider}
    check.log(f"  onnxruntime CPU (reference): {cpu_wall:.2f} s, stages {_short(cpu.timings_s)}")
    if check.state.get("ort_cuda") and not check.args.cpu:
        for tta in (True, False):
            if check.time_left_s() < 30:
                break
            key = f"onnxruntime_gpu{'' if tta else '_no_tta'}"
            try:
                gpu, wall = _segment_timed(series.folder, RunConfig(model=check.args.model, device="gpu", tta=tta))
            except Exception as exc:  # e.g. DeviceError: the provider is listed but CUDA/cuDNN do not load
                facts[key] = {"status": f"failed: {type(exc).__name__}: {exc}"}
                check.log(f"  onnxruntime GPU tta={tta}: FAILED: {exc}")
                continue
            row = {"wall_s": wall, "timings_s": dict(gpu.timings_s), "provider": gpu.provider, "tta": tta}
            if tta:
                row.update(_agreement(labels, np.asarray(gpu.labels.array), classes))
            facts[key] = row
            check.log(f"  onnxruntime {gpu.provider} tta={tta}: {wall:.2f} s {row.get('dice', '')}")
    device = check.state.get("device")
    if device is not None and "standin" in check.state:
        facts.update(_standin_end_to_end(check, series.folder, cpu, cpu_wall, labels, classes))
    # the target is for default settings (test-time shifts on); the --no-tta rows are shown beside
    walls = [v["wall_s"] for k, v in facts.items() if isinstance(v, dict) and v.get("tta") and "wall_s" in v]
    facts["target_met"] = bool(walls) and min(walls) <= TARGET_END_TO_END_S
    return facts


def _standin_end_to_end(
    check: Check, folder: Path, cpu: Any, cpu_wall: float, labels: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    from benchmarks import gpu_standin
    from litseg.runtime import RunConfig

    device = check.state["device"]
    network = gpu_standin.prepare(check.state["standin"].network, device)
    cpu_inference = sum(v for k, v in cpu.timings_s.items() if "infer" in k)
    facts: dict[str, Any] = {}
    cuda = device.startswith("cuda")
    for mode in ("fp32", "bf16-autocast") if cuda else ("fp32",):  # the dry run: one mode, one pass each
        for tta in (True, False) if cuda else (True,):
            if check.time_left_s() < 30:
                facts[f"pytorch_{device}_{mode}{'' if tta else '_no_tta'}"] = {"status": "skipped (time budget)"}
                continue
            model = gpu_standin.TorchModel(check.state["cpu_model"], network, device, mode, check.args.batch)
            result, wall = _segment_timed(folder, RunConfig(model=check.args.model, tta=tta), model=model)
            row: dict[str, Any] = {
                "engine": model.provider,
                "tta": tta,
                "wall_s": wall,
                "timings_s": dict(result.timings_s),
            }
            if model.calls == 0:  # segment no longer calls predict_volume: this ran onnxruntime on the CPU
                row = {
                    "engine": model.provider,
                    "tta": tta,
                    "status": "not measured: segment did not call predict_volume",
                }
            else:
                row["model_s"] = model.seconds
                # the same run with the CPU's inference swapped for the GPU's (the other stages as on the CPU)
                row["estimate_from_cpu_run_s"] = cpu_wall - cpu_inference + model.seconds if tta else None
                if tta:
                    row.update(_agreement(labels, np.asarray(result.labels.array), classes))
            key = f"pytorch_{device}_{mode}{'' if tta else '_no_tta'}"
            facts[key] = row
            wall_text = f"{row['wall_s']:.2f} s" if "wall_s" in row else row["status"]
            check.log(f"  {model.provider} tta={tta}: {wall_text} (model {model.seconds:.2f} s) {row.get('dice', '')}")
    return facts


def _short(timings: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in timings.items())


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/gpu_check.sh", description=__doc__.split("\n")[0])
    parser.add_argument("--cpu", action="store_true", default=os.environ.get("LITSEG_GPU_CHECK_DEVICE") == "cpu",
                        help="dry run on the CPU with small sizes (also LITSEG_GPU_CHECK_DEVICE=cpu)")  # fmt: skip
    parser.add_argument("--slices", type=int, default=None, help="series length (default 432; 8 with --cpu)")
    parser.add_argument(
        "--rows", type=int, default=None, help="rows = columns of the series (default 512; 128 with --cpu)"
    )
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--batch", type=int, default=None, help="stand-in batch for whole volumes (default 64)")
    parser.add_argument("--budget-s", type=float, default=480.0, help="skip sections that would start after this")
    args = parser.parse_args(argv)
    args.slices = args.slices or (8 if args.cpu else 432)
    args.rows = args.rows or (128 if args.cpu else 512)
    args.batch = args.batch or (4 if args.cpu else 64)
    args.throughput_batches = (1,) if args.cpu else (32, 64, 128, 256)
    args.seconds = 0.0 if args.cpu else 1.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    out = Path(os.environ.get("OUT") or REPO / "build" / "gpu-check")
    out.mkdir(parents=True, exist_ok=True)
    check = Check(args)
    size = f"{args.rows}x{args.rows}x{args.slices}"
    check.log(f"results into {out}; {'DRY RUN on the CPU' if args.cpu else 'GPU run'}, series {size}")
    check.section("environment", lambda: environment(check))
    check.section("standin_model", lambda: standin_model(check))
    check.section("throughput", lambda: throughput(check))
    check.section("end_to_end", lambda: end_to_end(check))
    check.results["seconds"] = time.perf_counter() - check.start
    (out / "gpu_check.json").write_text(json.dumps(check.results, indent=2, default=str))
    text = summary(check.results, TARGET_SLICES_PER_S, TARGET_END_TO_END_S)
    (out / "gpu_check.txt").write_text(text + "\n")
    print(text, flush=True)
    failed = [k for k, v in check.results.items() if isinstance(v, dict) and v.get("status") == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
