"""The HDF5 training set as a torch dataset, patient-wise splits, and anatomy-preserving augmentation."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from litseg.runtime.spec import PreprocessSpec


@dataclass(frozen=True)
class SetInfo:
    """What the HDF5 file says about itself."""

    spec: PreprocessSpec
    task: str
    class_voxels: np.ndarray
    case_names: tuple[str, ...]
    case_index: np.ndarray  # per slice
    slices: int


def read_info(path: Path) -> SetInfo:
    with h5py.File(path, "r") as f:
        names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in f["case_names"][:])
        return SetInfo(
            spec=PreprocessSpec.from_json(str(f.attrs["preprocess_spec"])),
            task=str(f.attrs["task"]),
            class_voxels=np.asarray(f.attrs["class_voxels"]),
            case_names=names,
            case_index=f["case_index"][:],
            slices=int(f["images"].shape[0]),
        )


def patient_split(info: SetInfo, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Slice indices of training and validation sets, split by case (no patient in both)."""
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


class SliceDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Slices of an HDF5 set: ``(image (1, h, w) float32, mask (h, w) int64)``.

    The HDF5 file is opened lazily, once per worker process.
    """

    def __init__(self, path: Path, indices: np.ndarray, augment: Augment | None = None, seed: int = 0) -> None:
        self.path = Path(path)
        self.indices = np.asarray(indices)
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self._file: h5py.File | None = None

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        n = int(self.indices[i])
        image = torch.from_numpy(self._file["images"][n][None].astype(np.float32))
        mask = torch.from_numpy(self._file["masks"][n].astype(np.int64))
        if self.augment is not None:
            g = torch.Generator().manual_seed(hash((self.seed, self.epoch, n)) & 0x7FFFFFFF)
            image, mask = self.augment(image, mask, g)
        return image, mask

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state["_file"] = None  # h5py handles do not cross process boundaries
        return state


def class_names_of(path: Path) -> list[str]:
    with h5py.File(path, "r") as f:
        return list(json.loads(str(f.attrs["class_names"])))
