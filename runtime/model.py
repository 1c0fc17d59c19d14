"""Loading an ONNX segmentation model and running it through onnxruntime.

The model metadata contract (see docs/architecture.md): the ONNX ``metadata_props`` hold
``litseg.preprocess_spec`` (JSON :class:`~litseg.runtime.spec.PreprocessSpec`), ``litseg.model_name``
and ``litseg.model_version``; optionally ``litseg.postprocess`` and ``litseg.inference`` (settings
calibrated on validation data). One float32 input ``(batch, 1, h, w)``, one float32 output
``(batch, classes, h, w)`` holding softmax probabilities.

Providers: ``onnxruntime-gpu`` lists CUDA and TensorRT as *available* even on machines without a GPU,
and then logs a loud error and silently runs on the CPU. So CUDA is only requested after the CUDA
driver reports a device, and the provider that really runs is read back from ``get_providers()``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .errors import DeviceError, ModelError
from .kernels import worker_threads
from .onnxruntime_check import onnxruntime as ort
from .spec import SPEC_METADATA_KEY, PreprocessSpec

log = logging.getLogger(__name__)

NAME_METADATA_KEY = "litseg.model_name"
VERSION_METADATA_KEY = "litseg.model_version"
#: Optional JSON object of post-processing settings calibrated on validation data
#: ({"tumor_margin_mm": 2.0, "min_tumor_ml": 0.2}).
POSTPROCESS_METADATA_KEY = "litseg.postprocess"
MAX_TUMOR_MARGIN_MM = 20.0
MAX_MIN_TUMOR_ML = 100.0
#: Optional JSON object of inference settings calibrated on validation data: in-plane shifts (pixels of the
#: model grid, [dy, dx]) whose shifted-back probabilities are averaged (test-time augmentation),
#: e.g. {"tta_shifts_px": [[0, 0], [8, 8]]}.
INFERENCE_METADATA_KEY = "litseg.inference"
MAX_TTA_SHIFTS = 8
MAX_TTA_SHIFT_PX = 64
NO_TTA: tuple[tuple[int, int], ...] = ((0, 0),)
DEVICES: tuple[str, ...] = ("auto", "gpu", "cpu")


@dataclass(frozen=True)
class ModelInfo:
    """What the model says about itself (from its ONNX metadata)."""

    name: str
    version: str
    spec: PreprocessSpec
    path: Path
    metadata: dict[str, str]
    #: Tumor margin (mm) calibrated on validation data, from ``litseg.postprocess``; 0 when absent.
    tumor_margin_mm: float = 0.0
    #: Test-time shifts ``(dy, dx)`` in model-grid pixels, from ``litseg.inference``; one unshifted pass
    #: when absent.
    tta_shifts_px: tuple[tuple[int, int], ...] = NO_TTA
    #: Smallest tumor component kept (mL) calibrated on validation data, from ``litseg.postprocess``; 0 (keep
    #: every one) when absent.
    min_tumor_ml: float = 0.0


DEFAULT_MODEL_NAME = "liver-tumor.onnx"
#: Default slices per inference call (:attr:`Model.default_batch_size`).
CPU_BATCH_SIZE = 2
GPU_BATCH_SIZE = 8


def default_model_path() -> Path:
    """The model bundled with the package (``litseg/runtime/models/liver-tumor.onnx``)."""
    path = Path(str(resources.files("litseg.runtime") / "models" / DEFAULT_MODEL_NAME))
    if not path.is_file():
        raise ModelError(
            f"no bundled default model at {path}: this install has none yet; pass --model PATH "
            "(API: RunConfig(model=...)) to an ONNX model exported with litseg-export"
        )
    return path


def cuda_device_count() -> int:
    """Number of CUDA devices the driver reports (0 without a driver or GPU); never raises."""
    name = ctypes.util.find_library("cuda") or "libcuda.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return 0
    count = ctypes.c_int(0)
    try:
        if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
    except AttributeError:
        return 0
    return int(count.value)


def _tensorrt_present() -> bool:
    return any(_loadable(name) for name in ("libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so"))


def _loadable(name: str) -> bool:
    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True


def choose_providers(device: str) -> list[str | tuple[str, dict[str, str]]]:
    """Execution providers to request for ``device`` (``auto``, ``gpu`` or ``cpu``)."""
    if device not in DEVICES:
        raise DeviceError(f"device must be one of {DEVICES}; got {device!r}")
    if device == "cpu":
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    gpus = cuda_device_count() if "CUDAExecutionProvider" in available else 0
    if gpus == 0:
        if device == "gpu":
            raise DeviceError(
                "device 'gpu' was requested but no usable CUDA GPU was found (onnxruntime providers: "
                f"{available}, CUDA devices: 0); install the NVIDIA driver and onnxruntime-gpu, or use "
                "--device cpu"
            )
        return ["CPUExecutionProvider"]
    if hasattr(ort, "preload_dlls"):
        try:  # loads CUDA/cuDNN from the nvidia-* pip packages when they are installed
            ort.preload_dlls()
        except Exception as exc:
            log.debug("onnxruntime.preload_dlls failed: %s", exc)
    providers: list[str | tuple[str, dict[str, str]]] = []
    if "TensorrtExecutionProvider" in available and _tensorrt_present():
        cache = Path(os.environ.get("LITSEG_TRT_CACHE", Path.home() / ".cache" / "litseg" / "tensorrt"))
        providers.append(
            (
                "TensorrtExecutionProvider",
                {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache)},
            )
        )
    providers += ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return providers


def _read_info(session: ort.InferenceSession, path: Path) -> ModelInfo:
    meta = dict(session.get_modelmeta().custom_metadata_map)
    missing = [k for k in (SPEC_METADATA_KEY, NAME_METADATA_KEY, VERSION_METADATA_KEY) if k not in meta]
    if missing:
        raise ModelError(
            f"model {path} lacks the litseg metadata {missing} (found keys: {sorted(meta) or 'none'}); "
            "export it with litseg-export, which writes the preprocessing spec and class names"
        )
    try:
        spec = PreprocessSpec.from_json(meta[SPEC_METADATA_KEY])
    except (ValueError, TypeError) as exc:
        raise ModelError(f"model {path} has an invalid {SPEC_METADATA_KEY}: {exc}") from exc
    margin, min_tumor_ml = _read_postprocess(meta.get(POSTPROCESS_METADATA_KEY), path)
    shifts = _read_tta_shifts(meta.get(INFERENCE_METADATA_KEY), path)
    return ModelInfo(
        meta[NAME_METADATA_KEY], meta[VERSION_METADATA_KEY], spec, path, meta, margin, shifts, min_tumor_ml
    )


def _read_postprocess(raw: str | None, path: Path) -> tuple[float, float]:
    """``(tumor_margin_mm, min_tumor_ml)`` from ``litseg.postprocess`` (each 0 when absent)."""
    if raw is None:
        return 0.0, 0.0
    try:
        settings = json.loads(raw)
        margin = float(settings.get("tumor_margin_mm", 0.0))
        min_ml = float(settings.get("min_tumor_ml", 0.0))
    except (ValueError, TypeError, AttributeError) as exc:
        raise ModelError(
            f"model {path} has an invalid {POSTPROCESS_METADATA_KEY} {raw!r} ({exc}); "
            'expected a JSON object such as {"tumor_margin_mm": 2.0, "min_tumor_ml": 0.2}'
        ) from exc
    for key, value, top, unit in (
        ("tumor_margin_mm", margin, MAX_TUMOR_MARGIN_MM, "mm"),
        ("min_tumor_ml", min_ml, MAX_MIN_TUMOR_ML, "mL"),
    ):
        if not 0.0 <= value <= top:
            raise ModelError(
                f"model {path} has {key} {value} in {POSTPROCESS_METADATA_KEY}; expected 0 to {top} {unit}"
            )
    return margin, min_ml


def check_tta_shifts(shifts: object) -> tuple[tuple[int, int], ...]:
    """Validate test-time shifts: 1 to ``MAX_TTA_SHIFTS`` distinct ``[dy, dx]`` integer pairs, each within
    ``MAX_TTA_SHIFT_PX``, one of them ``[0, 0]``; returns them as tuples or raises ``ValueError`` naming
    what is wrong."""
    if not isinstance(shifts, list | tuple) or not 1 <= len(shifts) <= MAX_TTA_SHIFTS:
        raise ValueError(f"tta_shifts_px must be a list of 1 to {MAX_TTA_SHIFTS} [dy, dx] pairs; got {shifts!r}")
    out = []
    for pair in shifts:
        if (
            not isinstance(pair, list | tuple)
            or len(pair) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and abs(v) <= MAX_TTA_SHIFT_PX for v in pair)
        ):
            raise ValueError(f"each tta shift must be [dy, dx], integers within +-{MAX_TTA_SHIFT_PX} px; got {pair!r}")
        out.append((int(pair[0]), int(pair[1])))
    if len(set(out)) != len(out):
        raise ValueError(f"tta_shifts_px repeats a shift: {shifts!r}")
    if (0, 0) not in out:
        raise ValueError(f"tta_shifts_px must include [0, 0], the pass that sees every pixel; got {shifts!r}")
    return tuple(out)


def _read_tta_shifts(raw: str | None, path: Path) -> tuple[tuple[int, int], ...]:
    if raw is None:
        return NO_TTA
    try:
        loaded = json.loads(raw)
        if not isinstance(loaded, dict):
            raise ValueError("not a JSON object")
        return check_tta_shifts(loaded.get("tta_shifts_px", [[0, 0]]))
    except ValueError as exc:
        raise ModelError(
            f"model {path} has an invalid {INFERENCE_METADATA_KEY} {raw!r} ({exc}); "
            'expected a JSON object such as {"tta_shifts_px": [[0, 0], [8, 8]]}'
        ) from exc


#: Words in an onnxruntime error that point at the device rather than the model (out of memory, CUDA).
DEVICE_ERROR_HINTS = ("out of memory", "cuda", "cudnn", "cublas", "tensorrt", "failed to allocate", "bad_alloc")


def run_error(exc: Exception, path: Path, provider: str) -> DeviceError | ModelError:
    """The litseg error for an exception raised by ``session.run``: device trouble (out of memory, CUDA
    errors) is a :class:`DeviceError` (exit 5), anything else a :class:`ModelError` (exit 4)."""
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    if any(hint in str(exc).lower() for hint in DEVICE_ERROR_HINTS):
        return DeviceError(
            f"inference failed on {provider}: {text}; free the device, lower --batch-size, or use --device cpu"
        )
    return ModelError(f"model {path} failed during inference on {provider}: {text}; check or re-export the model")


def _axis_slices(n: int, d: int) -> tuple[slice, slice]:
    """(destination, source) slices that move ``n`` samples by ``d`` (content at i lands at i + d)."""
    return (slice(d, n), slice(0, n - d)) if d >= 0 else (slice(0, n + d), slice(-d, n))


def shift_slices(image: npt.NDArray[np.float32], dy: int, dx: int) -> npt.NDArray[np.float32]:
    """``(n, h, w)`` moved by ``(dy, dx)`` pixels; uncovered pixels are 0 (the window's lower end: air)."""
    out = np.zeros_like(image)
    (ydst, ysrc), (xdst, xsrc) = _axis_slices(image.shape[1], dy), _axis_slices(image.shape[2], dx)
    out[:, ydst, xdst] = image[:, ysrc, xsrc]
    return out


class Model:
    """An ONNX segmentation model bound to an execution provider.

    Parameters
    ----------
    path
        ``.onnx`` file with litseg metadata; ``None`` loads the bundled default model.
    device
        ``auto`` (GPU when usable, else CPU), ``gpu`` (error when no GPU is usable) or ``cpu``.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, device: str = "auto") -> None:
        self.path = default_model_path() if path is None else Path(path)
        if not self.path.is_file():
            raise ModelError(f"model file not found: {self.path}; pass --model PATH to an .onnx file")
        providers = choose_providers(device)
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only; provider fallback is reported by us below
        # The CPUs this process may use (LITSEG_THREADS overrides), no inter-op pool for a sequential graph,
        # and no spinning: idle onnxruntime threads would otherwise burn the cores that reading and
        # preprocessing the next batch need (runtime/pipeline.py overlaps them).
        options.intra_op_num_threads = worker_threads()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # The focus gives every block its own input shape; a memory pattern is planned and kept per shape
        # (more peak memory on the CPU for no measurable speed: docs/performance.md).
        options.enable_mem_pattern = False
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt models
            raise ModelError(f"cannot load model {self.path}: {exc}") from exc
        self.info = _read_info(self._session, self.path)
        self.provider = self._session.get_providers()[0]
        if device == "gpu" and self.provider == "CPUExecutionProvider":
            raise DeviceError(
                "device 'gpu' was requested but onnxruntime could not start CUDA (missing CUDA/cuDNN "
                "libraries?); install them (pip install 'onnxruntime-gpu[cuda,cudnn]') or use --device cpu"
            )
        if device == "auto" and len(providers) > 1 and self.provider == "CPUExecutionProvider":
            log.warning("a CUDA GPU is present but onnxruntime could not use it; running on the CPU")
        self._check_io()
        log.info("model %s %s on %s", self.info.name, self.info.version, self.provider)

    def _check_io(self) -> None:
        """The model contract, checked at load so that a wrong model fails before any series is read: one
        float32 input ``(batch, 1, h, w)`` whose fixed sizes, if any, match the spec; one output whose class
        axis, if fixed, matches the spec's class names."""
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(
                f"model {self.path} must have one input and one output; got {len(inputs)} and {len(outputs)}"
            )
        shape = inputs[0].shape
        if len(shape) != 4 or inputs[0].type != "tensor(float)":
            raise ModelError(f"model {self.path} input must be float32 (batch, 1, h, w); got {inputs[0].type} {shape}")
        expected = (None, 1, *self.spec.target_shape_yx)
        for axis, (size, want) in enumerate(zip(shape, expected, strict=True)):
            if isinstance(size, int) and want is not None and size != want:
                raise ModelError(
                    f"model {self.path} input has size {size} on axis {axis} (shape {shape}) but its "
                    f"preprocessing spec needs (batch, 1, {self.spec.target_shape_yx[0]}, "
                    f"{self.spec.target_shape_yx[1]}); re-export the model or fix its litseg.preprocess_spec"
                )
        out_shape = outputs[0].shape
        if len(out_shape) != 4 or (isinstance(out_shape[1], int) and out_shape[1] != self.spec.num_classes):
            raise ModelError(
                f"model {self.path} output shape {out_shape} does not give {self.spec.num_classes} classes "
                f"{self.spec.class_names} as (batch, classes, h, w); the model and its metadata disagree"
            )
        self._input_name = inputs[0].name
        #: Whether the graph takes any height and width (a fully convolutional export), so that the full pass
        #: can run on a box around the liver; models exported with fixed 256x256 inputs always see the grid.
        self.any_size = not (isinstance(shape[2], int) or isinstance(shape[3], int))

    @property
    def spec(self) -> PreprocessSpec:
        return self.info.spec

    @property
    def default_batch_size(self) -> int:
        """Slices per inference call when the caller does not choose: on the CPU 2 (onnxruntime is as fast per
        slice as with 8 and holds a quarter of the activations: ~60 instead of ~250 MB for the bundled
        U-Net at 256 x 256), on a GPU 8."""
        return CPU_BATCH_SIZE if self.provider == "CPUExecutionProvider" else GPU_BATCH_SIZE

    def predict(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Class probabilities for a batch ``(n, 1, h, w)`` float32 -> ``(n, classes, h, w)`` float32."""
        if batch.ndim != 4 or batch.shape[1] != 1 or batch.dtype != np.float32:
            raise ValueError(f"batch must be float32 (n, 1, h, w); got {batch.dtype} {batch.shape}")
        try:
            (out,) = self._session.run(None, {self._input_name: np.ascontiguousarray(batch)})
        except Exception as exc:  # onnxruntime raises its own types (Fail, RuntimeException, ...)
            raise run_error(exc, self.path, self.provider) from exc
        probs = np.asarray(out, dtype=np.float32)
        expected = (batch.shape[0], self.spec.num_classes, *batch.shape[2:])
        if probs.shape != expected:
            raise ModelError(
                f"model {self.path} returned shape {probs.shape}; expected {expected} "
                f"({self.spec.num_classes} classes {self.spec.class_names})"
            )
        return probs

    def _predict_padded(self, slices: npt.NDArray[np.float32], batch_size: int) -> npt.NDArray[np.float32]:
        """``predict`` on ``(n, h, w)``; on a GPU a short last batch is padded to ``batch_size`` so that CUDA
        and TensorRT see one input shape per series and never plan again (the CPU needs no padding)."""
        n = slices.shape[0]
        if self.provider == "CPUExecutionProvider" or n >= batch_size:
            return self.predict(np.ascontiguousarray(slices[:, None]))
        padded = np.zeros((batch_size, 1, *slices.shape[1:]), dtype=np.float32)
        padded[:n, 0] = slices
        return self.predict(padded)[:n]

    def predict_volume(
        self,
        image: npt.NDArray[np.float32],
        batch_size: int = 8,
        progress: Callable[[int, int], None] | None = None,
        shifts: tuple[tuple[int, int], ...] = NO_TTA,
    ) -> npt.NDArray[np.float32]:
        """Run every slice of ``(z, h, w)`` in batches; returns ``(z, classes, h, w)`` probabilities.

        With several ``shifts`` (test-time augmentation, e.g. :attr:`ModelInfo.tta_shifts_px`) each batch
        runs once per shift ``(dy, dx)``: the input moved by it, the probabilities moved back, and each
        pixel gets the mean of the passes that saw it (a 2-D U-Net's pooling grid makes its output depend
        on where the anatomy falls; averaging smooths that out). Costs one inference per shift.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        shifts = check_tta_shifts(shifts)
        nz, ny, nx = image.shape
        out = np.zeros((nz, self.spec.num_classes, ny, nx), dtype=np.float32)
        # per shift: where the moved input's pixels are (dst) and where they came from (src), in y and x
        moves = [((dy, dx), _axis_slices(ny, dy), _axis_slices(nx, dx)) for dy, dx in shifts]
        seen = np.zeros((ny, nx), dtype=np.float32)
        for _, (_, ysrc), (_, xsrc) in moves:
            seen[ysrc, xsrc] += 1.0
        for start in range(0, nz, batch_size):
            stop = min(start + batch_size, nz)
            batch = np.asarray(image[start:stop], dtype=np.float32)
            for (dy, dx), (ydst, ysrc), (xdst, xsrc) in moves:
                moved = batch if (dy, dx) == (0, 0) else shift_slices(batch, dy, dx)
                probs = self._predict_padded(moved, batch_size)
                out[start:stop, :, ysrc, xsrc] += probs[:, :, ydst, xdst]
            if progress is not None:
                progress(stop, nz)
        if len(shifts) > 1:
            out /= seen  # >= 1 everywhere: the [0, 0] pass sees every pixel
        return out
