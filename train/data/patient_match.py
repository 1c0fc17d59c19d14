"""Find the same patient in two real-slice collections by image content.

The public slice collections are exports of overlapping LiTS17 volumes (``../shared/data/README.md``):
the same patient appears as ``msd-liver-slices`` (256 px, HU saturated to 0..255), ``ircad-liver-slices``
(512 px, min-max normalised per slice) and ``lits-tumor-slices`` (512 px, three JPEG intensity windows),
each transposed or flipped in its own way. The loaders undo most of that (canonical orientation, an
estimated HU scale); what is left is compared here in one representation, the *signature* of a slice:

- HU clipped to :data:`WINDOW_HU` (0..150 HU): the range all three exports keep (MSD saturates fat and
  air to 0 and bone to 255; the lits-tumor windows end near -45 and 160 HU; IRCAD's estimated HU scale is
  off by up to ~20 HU, which a linear similarity ignores), so a clipped value means the same everywhere;
- padded to a square and area-averaged to :data:`GRID` x :data:`GRID` pixels (the exports resized the whole
  field of view, so the same anatomy lands on the same cell whatever the pixel count; 64 px keeps the
  organs' outlines while JPEG noise and a neighbouring slice's small changes average out);
- high-passed: minus its Gaussian blur (:data:`HIGHPASS_SIGMA_PX` cells), which removes what every abdomen
  shares (a bright oval of about the same size) and what an export's intensity map shifts smoothly, and
  keeps the organs' and vessels' edges, which differ between people;
- centred and scaled to unit length, so that the dot product of two signatures is their Pearson r.

Two patients score the best r over every pair of their slices and every one of the 8 dihedral transforms
of the second slice (the loaders' orientation from anatomy is not trusted blindly). They are the same
person when that score reaches :data:`MATCH_R`. Measured on the real collections (docs/training.md):
the same slice or a near one in another export scores 0.76-0.99, different patients at most 0.44 (without
the high-pass: 0.90-0.998 against 0.83, too close). A patient whose slices in two exports lie at
different levels of the body scores 0.16-0.57: often above every stranger, but not surely.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image
from scipy import ndimage

from litseg.runtime.geometry import Reorientation

from .orientation import DIHEDRAL
from .real_slices import RealSlice

#: The HU range every export keeps (see the module docstring).
WINDOW_HU = (0.0, 150.0)
#: Signatures are GRID x GRID pixels.
GRID = 64
#: Width of the Gaussian blur subtracted from a signature, in GRID cells (about 16 mm of a 500 mm field).
HIGHPASS_SIGMA_PX = 2.0
#: Best-pair Pearson r from which two patients are the same person (same patient 0.76-0.99, different
#: patients <= 0.44 on the real collections: docs/training.md).
MATCH_R = 0.6


def signature(hu: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    """The comparable form of one slice.

    Parameters
    ----------
    hu
        ``(h, w)`` Hounsfield units (any scale that is HU within :data:`WINDOW_HU`).

    Returns
    -------
    float32 ``(GRID, GRID)``, zero mean and unit Euclidean norm (all zeros for a slice that is flat
    within the window: it matches nothing).
    """
    if hu.ndim != 2 or min(hu.shape) < 1:
        raise ValueError(f"a slice must be a 2-D array; got shape {hu.shape}")
    clipped = np.clip(np.asarray(hu, dtype=np.float32), *WINDOW_HU)
    h, w = clipped.shape
    if h != w:  # the exports padded to a square before resizing; pad with the window's floor
        side = max(h, w)
        square = np.full((side, side), WINDOW_HU[0], dtype=np.float32)
        square[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = clipped
        clipped = square
    small = np.asarray(Image.fromarray(clipped, mode="F").resize((GRID, GRID), Image.Resampling.BOX), np.float64)
    # The blur is isotropic and its border mode symmetric, so the signature turns with the slice.
    detail = small - ndimage.gaussian_filter(small, HIGHPASS_SIGMA_PX, mode="reflect")
    centred: npt.NDArray[np.float64] = detail - detail.mean()
    norm = float(np.linalg.norm(centred))
    unit = centred / norm if norm > 1e-6 else np.zeros_like(centred)
    return np.asarray(unit, dtype=np.float32)


@dataclass(frozen=True)
class Signatures:
    """The signatures of a collection's slices, grouped by patient.

    ``vectors`` is float32 ``(n, GRID, GRID)``, row ``i`` the slice ``slice_ids[i]`` of ``patients[i]``.
    """

    patients: tuple[str, ...]
    slice_ids: tuple[int, ...]
    vectors: npt.NDArray[np.float32]

    def __post_init__(self) -> None:
        n = len(self.patients)
        if len(self.slice_ids) != n or self.vectors.shape != (n, GRID, GRID):
            raise ValueError(
                f"{n} patients, {len(self.slice_ids)} slice ids and vectors of shape {self.vectors.shape} "
                f"do not line up (expected ({n}, {GRID}, {GRID}))"
            )

    @staticmethod
    def of(slices: Sequence[RealSlice]) -> Signatures:
        """The signatures of loaded slices (``hu`` of each)."""
        return Signatures(
            tuple(s.patient for s in slices),
            tuple(s.slice_index for s in slices),
            np.stack([signature(s.hu) for s in slices]) if slices else np.zeros((0, GRID, GRID), np.float32),
        )

    def __add__(self, other: Signatures) -> Signatures:
        return Signatures(
            self.patients + other.patients,
            self.slice_ids + other.slice_ids,
            np.concatenate([self.vectors, other.vectors]),
        )

    def unique_patients(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.patients))


@dataclass(frozen=True)
class PairScore:
    """The best slice pair of two patients: Pearson ``r``, the slices, and the transform of ``slice_b``."""

    patient_a: str
    patient_b: str
    r: float
    slice_a: int
    slice_b: int
    transform: Reorientation


@dataclass(frozen=True)
class ScoreTable:
    """Best-pair scores of every patient of ``a`` (rows) against every patient of ``b`` (columns)."""

    patients_a: tuple[str, ...]
    patients_b: tuple[str, ...]
    r: npt.NDArray[np.float32]  # (len(patients_a), len(patients_b))
    best: dict[tuple[str, str], PairScore]

    def matches(self, threshold: float = MATCH_R) -> list[PairScore]:
        """The patient pairs scoring at least ``threshold``, best first."""
        rows, cols = np.nonzero(self.r >= threshold)
        found = [self.best[(self.patients_a[i], self.patients_b[j])] for i, j in zip(rows, cols, strict=True)]
        return sorted(found, key=lambda p: -p.r)

    def ranked(self, patient: str, along: str = "a") -> list[tuple[str, float]]:
        """The other side's patients by their score against ``patient`` (of side ``along``), best first."""
        if along == "a":
            row, others = self.r[self.patients_a.index(patient)], self.patients_b
        else:
            row, others = self.r[:, self.patients_b.index(patient)], self.patients_a
        order = np.argsort(-row, kind="stable")
        return [(others[k], float(row[k])) for k in order]


def _group_starts(patients: tuple[str, ...]) -> tuple[tuple[str, ...], npt.NDArray[np.intp]]:
    """Each patient's first row, requiring every patient's rows to be contiguous."""
    names = tuple(dict.fromkeys(patients))
    starts = np.array([patients.index(p) for p in names], dtype=np.intp)
    ends = np.append(starts[1:], len(patients))
    for name, start, end in zip(names, starts, ends, strict=True):
        if any(p != name for p in patients[start:end]):
            raise ValueError(f"the slices of {name} are not contiguous; sort the slices by patient first")
    return names, starts


def score(a: Signatures, b: Signatures) -> ScoreTable:
    """Compare every slice of ``a`` with every slice of ``b`` under the 8 dihedral transforms.

    Each collection's slices must be grouped by patient (the loaders sort them so). Memory is
    ``len(a) x len(b)`` floats, twice: a few MB for the real collections.
    """
    if not len(a.patients) or not len(b.patients):
        raise ValueError(f"nothing to compare: {len(a.patients)} and {len(b.patients)} slices")
    names_a, starts_a = _group_starts(a.patients)
    names_b, starts_b = _group_starts(b.patients)
    flat_a = a.vectors.reshape(len(a.patients), -1)
    best_r = np.full((len(a.patients), len(b.patients)), -np.inf, dtype=np.float32)
    best_t = np.zeros(best_r.shape, dtype=np.int8)
    for k, transform in enumerate(DIHEDRAL):
        turned = np.asarray(transform.apply_array(b.vectors)).reshape(len(b.patients), -1)
        r = flat_a @ turned.T
        better = r > best_r
        best_r[better], best_t[better] = r[better], k
    table = np.maximum.reduceat(np.maximum.reduceat(best_r, starts_a, axis=0), starts_b, axis=1)
    ends_a, ends_b = np.append(starts_a[1:], len(a.patients)), np.append(starts_b[1:], len(b.patients))
    best: dict[tuple[str, str], PairScore] = {}
    for i, name_a in enumerate(names_a):
        for j, name_b in enumerate(names_b):
            block = best_r[starts_a[i] : ends_a[i], starts_b[j] : ends_b[j]]
            u, v = np.unravel_index(int(np.argmax(block)), block.shape)
            ia, ib = starts_a[i] + u, starts_b[j] + v
            best[(name_a, name_b)] = PairScore(
                name_a, name_b, float(block[u, v]), a.slice_ids[ia], b.slice_ids[ib], DIHEDRAL[best_t[ia, ib]]
            )
    return ScoreTable(names_a, names_b, table, best)


@dataclass(frozen=True)
class Separation:
    """How clearly a score table separates: the lowest match and the highest non-match."""

    lowest_match: float | None
    highest_other: float | None

    @property
    def margin(self) -> float | None:
        if self.lowest_match is None or self.highest_other is None:
            return None
        return self.lowest_match - self.highest_other


def separation(table: ScoreTable, threshold: float = MATCH_R) -> Separation:
    """The lowest score at or above ``threshold`` and the highest below it, over the whole table."""
    above, below = table.r[table.r >= threshold], table.r[table.r < threshold]
    return Separation(
        float(above.min()) if above.size else None,
        float(below.max()) if below.size else None,
    )
