"""The HDF5 training set as a torch dataset, patient-wise splits, and anatomy-preserving augmentation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from litseg.runtime.spec import PreprocessSpec

from ..data.h5set import LIVER_OR_TUMOR, MASK_VALUES


@dataclass(frozen=True)
class SetInfo:
    """What the HDF5 file says about itself.

    ``case_split`` is the split recorded in the file (``train`` / ``val`` / ``test`` per case, e.g. the
    fixed MSD split), None when the trainer draws one; ``use`` is ``"test"`` for a set that must never
    be trained on.
    """

    spec: PreprocessSpec
    task: str
    class_voxels: np.ndarray
    case_names: tuple[str, ...]
    case_index: np.ndarray  # per slice
    slices: int
    case_split: tuple[str, ...] | None = None
    use: str = "train"
    provenance: str | None = None  # where real data came from, with its licences (litseg-prepare-real)


def _strings(values: np.ndarray) -> tuple[str, ...]:
    return tuple(v.decode() if isinstance(v, bytes) else str(v) for v in values)


def read_info(path: Path) -> SetInfo:
    with h5py.File(path, "r") as f:
        return SetInfo(
            spec=PreprocessSpec.from_json(str(f.attrs["preprocess_spec"])),
            task=str(f.attrs["task"]),
            class_voxels=np.asarray(f.attrs["class_voxels"]),
            case_names=_strings(f["case_names"][:]),
            case_index=f["case_index"][:],
            slices=int(f["images"].shape[0]),
            case_split=_strings(f["case_split"][:]) if "case_split" in f else None,
            use=str(f.attrs.get("use", "train")),
            provenance=str(f.attrs["provenance"]) if "provenance" in f.attrs else None,
        )


def slice_label_counts(path: Path, indices: np.ndarray) -> np.ndarray:
    """``(len(indices), 4)`` pixel counts of the label values 0-3 of those slices (from the set's
    ``slice_class_voxels``; counted from the masks for sets written before it)."""
    indices = np.asarray(indices, dtype=np.int64)
    with h5py.File(path, "r") as f:
        if "slice_class_voxels" in f:
            table = f["slice_class_voxels"][:]
            return np.asarray(table[indices], dtype=np.int64)
        masks = f["masks"]
        return np.array([np.bincount(masks[int(i)].ravel(), minlength=MASK_VALUES) for i in indices], np.int64)


def class_voxels_of(counts: np.ndarray, num_classes: int) -> np.ndarray:
    """Voxels per class from label-value counts; liver-or-tumor pixels count as liver."""
    voxels: np.ndarray = np.asarray(counts, dtype=np.float64).sum(axis=0)[:num_classes].copy()
    if num_classes == 3:
        voxels[1] += float(np.asarray(counts)[:, LIVER_OR_TUMOR].sum())
    return voxels


def data_summary(path: Path, info: SetInfo, train_idx: np.ndarray, val_idx: np.ndarray) -> dict[str, object]:
    """What a model was trained on, for its checkpoint and ONNX metadata: the set, the patient-wise split
    and the class balance (counts and fractions only; case names stay out of model files)."""
    voxels = np.asarray(info.class_voxels, dtype=np.float64)
    return {
        "file": path.name,
        "task": info.task,
        "cases": len(info.case_names),
        "train_cases": len(set(info.case_index[train_idx].tolist())),
        "val_cases": len(set(info.case_index[val_idx].tolist())),
        "train_slices": len(train_idx),
        "val_slices": len(val_idx),
        "class_voxel_fraction": {
            name: round(float(v / voxels.sum()), 6) for name, v in zip(info.spec.class_names, voxels, strict=True)
        },
        **({"provenance": info.provenance} if info.provenance else {}),
    }


def patient_split(info: SetInfo, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Slice indices of training and validation sets, split by case (no patient in both).

    A split recorded in the set (``case_split``) wins over ``val_fraction`` and ``seed``; its ``test``
    cases are in neither part.
    """
    if info.case_split is not None:
        split = np.array(info.case_split)[info.case_index]
        train_idx, val_idx = np.nonzero(split == "train")[0], np.nonzero(split == "val")[0]
        if train_idx.size == 0 or val_idx.size == 0:
            raise ValueError(f"the set's recorded split needs train and val cases; got {sorted(set(info.case_split))}")
        return train_idx, val_idx
    n_cases = len(info.case_names)
    if n_cases < 2:
        raise ValueError(f"a patient-wise split needs at least 2 cases; the set has {n_cases}")
    order = np.random.default_rng(seed).permutation(n_cases)
    n_val = min(n_cases - 1, max(1, round(val_fraction * n_cases)))
    val_cases = np.sort(order[:n_val])
    is_val = np.isin(info.case_index, val_cases)
    return np.nonzero(~is_val)[0], np.nonzero(is_val)[0]


@dataclass(frozen=True)
class Augment:
    """Augmentation that keeps anatomy: no left-right or anterior-posterior flips.

    Intensities are in the window's [0, 1] units (1 unit = window width in HU).
    """

    contrast: tuple[float, float] = (0.85, 1.15)
    shift: float = 0.08  # about +-40 HU with a 500 HU window: covers non-contrast and late-phase livers
    noise_sd: float = 0.04  # up to ~20 HU extra noise
    rotate_deg: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    probability: float = 0.8

    @classmethod
    def for_window(cls, window_hu: tuple[float, float], scale: tuple[float, float] = (0.9, 1.1)) -> Augment:
        """The default augmentation with the brightness shift (+-40 HU) and noise (20 HU) kept in HU for
        this window (the defaults are written for the 500 HU window -200..300), zoomed within ``scale``."""
        units_per_hu = 1.0 / (window_hu[1] - window_hu[0])
        return cls(shift=40.0 * units_per_hu, noise_sd=20.0 * units_per_hu, scale=scale)

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor, g: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image (1, h, w) float, mask (h, w) int64 -> augmented copies."""
        if torch.rand((), generator=g) > self.probability:
            return image, mask
        a = float(torch.empty(()).uniform_(*self.contrast, generator=g))
        b = float(torch.empty(()).uniform_(-self.shift, self.shift, generator=g))
        sd = float(torch.empty(()).uniform_(0, self.noise_sd, generator=g))
        angle = math.radians(float(torch.empty(()).uniform_(-self.rotate_deg, self.rotate_deg, generator=g)))
        s = float(torch.empty(()).uniform_(*self.scale, generator=g))
        theta = torch.tensor(
            [
                [math.cos(angle) / s, -math.sin(angle) / s, 0.0],
                [math.sin(angle) / s, math.cos(angle) / s, 0.0],
            ],
            dtype=torch.float32,
        )[None]
        grid = F.affine_grid(theta, [1, 1, *image.shape[1:]], align_corners=False)
        warped = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
        warped_mask = F.grid_sample(
            mask[None, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
        )[0, 0].long()
        noise = torch.randn(warped.shape, generator=g) * sd
        return (warped * a + b + noise).clamp(-0.5, 1.5), warped_mask


@dataclass(frozen=True)
class Crop:
    """Random square patches of ``size`` pixels (nnU-Net style patch training, cheaper per step).

    A ``foreground`` fraction of the patches is centred on a random pixel of the rarest class the slice
    shows (tumor, else liver), so that small structures are seen far more often than their share of the
    slice; the rest are placed uniformly. The network is fully convolutional: it still runs on whole
    slices at inference and validation.
    """

    size: int
    foreground: float = 0.5

    def __post_init__(self) -> None:
        if self.size < 16 or self.size % 16:
            raise ValueError(f"crop size must be a multiple of 16 (the U-Net's 4 poolings); got {self.size}")
        if not 0.0 <= self.foreground <= 1.0:
            raise ValueError(f"crop foreground fraction must be in [0, 1]; got {self.foreground}")

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor, g: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image (1, h, w), mask (h, w) -> the same patch of both, (1, size, size) and (size, size)."""
        h, w = mask.shape
        if self.size > min(h, w):
            raise ValueError(f"crop size {self.size} exceeds the slice size {h}x{w}; use --crop <= {min(h, w)}")
        y0 = int(torch.randint(0, h - self.size + 1, (), generator=g))
        x0 = int(torch.randint(0, w - self.size + 1, (), generator=g))
        top = int(mask.max())
        if top > 0 and float(torch.rand((), generator=g)) < self.foreground:
            ys, xs = torch.nonzero(mask == top, as_tuple=True)
            k = int(torch.randint(0, ys.numel(), (), generator=g))
            y0 = min(max(int(ys[k]) - self.size // 2, 0), h - self.size)
            x0 = min(max(int(xs[k]) - self.size // 2, 0), w - self.size)
        return (
            image[:, y0 : y0 + self.size, x0 : x0 + self.size],
            mask[y0 : y0 + self.size, x0 : x0 + self.size],
        )


class SliceDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Slices of an HDF5 set: ``(image (1, h, w) float32, mask (h, w) int64)``, optionally augmented and
    cropped to patches (augmentation first, on the whole slice, so that rotations bring in real context).

    The HDF5 file is opened lazily, once per worker process.
    """

    def __init__(
        self,
        path: Path,
        indices: np.ndarray,
        augment: Augment | None = None,
        seed: int = 0,
        crop: Crop | None = None,
    ) -> None:
        self.path = Path(path)
        self.indices = np.asarray(indices)
        self.augment = augment
        self.crop = crop
        self.seed = seed
        self.epoch = 0
        self._file: h5py.File | None = None

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sample(i, 0)

    def sample(self, i: int, draw: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Item ``i`` as its ``draw``-th copy in this epoch: each copy of a slice drawn several times (a
        small set at a large share, a boosted slice) gets its own augmentation and patch."""
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        n = int(self.indices[i])
        image = torch.from_numpy(self._file["images"][n][None].astype(np.float32))
        mask = torch.from_numpy(self._file["masks"][n].astype(np.int64))
        key = (self.seed, self.epoch, n) if draw == 0 else (self.seed, self.epoch, n, draw)
        g = torch.Generator().manual_seed(hash(key) & 0x7FFFFFFF)
        if self.augment is not None:
            image, mask = self.augment(image, mask, g)
        if self.crop is not None:
            image, mask = self.crop(image, mask, g)
        return image, mask

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state["_file"] = None  # h5py handles do not cross process boundaries
        return state
