"""The lits-tumor-slices loader: channels to HU, the export check, orientation per volume, the fixed split,
and the HDF5 set with full tumor labels and real liver-free negatives."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np
import pytest

from litseg.runtime.errors import InputError
from litseg.runtime.geometry import Reorientation
from litseg.train.data import lits_tumor as lt
from litseg.train.data.prepare_real import main as prepare_real_main
from litseg.train.data.real_slices import RealSlice
from tests.conftest import shared_data


def windowed_rgb(hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An export like the collection's: the two windows as channels 0 and 1, anything monotone as channel 2."""
    c0 = lt.LIVER_WINDOW.grey(hu)
    c1 = lt.WIDE_WINDOW.grey(hu)
    c2 = np.clip((hu + 1000) / 12, 0, 255)
    noise = rng.normal(0, 1.0, (*hu.shape, 3))
    return np.clip(np.round(np.stack([c0, c1, c2], axis=-1) + noise), 0, 255).astype(np.float32)


def test_hu_of_recovers_the_windows_range_and_bounds_the_rest() -> None:
    rng = np.random.default_rng(0)
    hu = np.linspace(-300, 600, 64 * 64).reshape(64, 64)
    got = lt.hu_of(windowed_rgb(hu, rng))
    inside = (hu > -38) & (hu < 152)
    assert np.abs(got[inside] - hu[inside]).max() < 3.0  # one grey level of noise is under 1 HU
    assert np.all(got[hu > 170] == lt.ABOVE_WINDOW_HU)
    assert np.all(got[hu < -60] == lt.BELOW_WINDOW_HU)
    assert got.dtype == np.float32


def test_the_channel_relation_is_measured_and_a_grey_export_refused() -> None:
    rng = np.random.default_rng(1)
    images = [windowed_rgb(rng.uniform(-200, 400, (96, 96)), rng) for _ in range(4)]
    relation = lt.fit_channel_relation(images)
    want = lt.ChannelRelation.expected()
    assert relation.slope == pytest.approx(want.slope, abs=0.02)
    assert relation.offset == pytest.approx(want.offset, abs=2.0)
    lt.check_windows(relation)
    grey = [np.repeat(im[..., 1:2], 3, axis=-1) for im in images]  # equal channels: an MSD-like export
    with pytest.raises(InputError, match=r"channel 0 = 1\.000 x channel 1 \+ 0\.0.*not the lits-tumor-slices export"):
        lt.check_windows(lt.fit_channel_relation(grey))


def test_split_and_runs_of_neighbours() -> None:
    assert [lt.split_of(v) for v in (5, 9, 3)] == ["test", "selection", "train"]
    assert not set(lt.TEST_VOLUMES) & set(lt.SELECTION_VOLUMES)
    blank = np.zeros((2, 2), np.float32)

    def s(patient: str, index: int) -> RealSlice:
        return RealSlice("lits-tumor", patient, index, f"{patient}_{index}", blank, blank > 0, None, None)  # type: ignore[arg-type]

    runs = lt.consecutive_runs([s("lits-3", 4), s("lits-3", 0), s("lits-3", 2), s("lits-3", 8), s("lits-4", 10)])
    assert [[x.slice_index for x in run] for run in runs] == [[0, 2, 4], [8], [10]]


@pytest.fixture(scope="module")
def collection() -> Path:
    return shared_data("lits-tumor-slices")


@pytest.fixture(scope="module")
def some_volumes(collection: Path) -> list[RealSlice]:
    return lt.load_lits_tumor(collection, volumes={0, 7, 25, 48})


def test_real_export_follows_the_two_windows(collection: Path) -> None:
    table = lt.rows(collection)
    assert len(table) == 1580
    sample = [lt._rgb(r.image) for r in table[:: len(table) // 40][:40]]
    lt.check_windows(lt.fit_channel_relation(sample))  # raises when the export is not what the module assumes


def test_real_slices_are_radiological_and_labelled_apart(some_volumes: list[RealSlice]) -> None:
    assert {s.patient for s in some_volumes} == {"lits-0", "lits-7", "lits-25", "lits-48"}
    with_liver = [s for s in some_volumes if s.liver.any()]
    assert not any(s.liver.any() for s in some_volumes if s.patient == "lits-25")  # a pelvis: real negatives
    # The volume's pooled verdict keeps the README's radiological view, and the slices agree on their own.
    assert all(s.transform == Reorientation() for s in some_volumes)
    assert np.mean([s.agrees for s in with_liver]) > 0.95
    tumor = [s for s in with_liver if s.tumor is not None and s.tumor.any()]
    assert tumor and all(np.all(s.liver[s.tumor]) for s in tumor)  # tumor lies within liver-or-tumor
    # HU: enhanced or plain liver parenchyma, and tumors darker than their liver on most slices.
    liver_hu = [float(np.median(s.hu[s.liver & ~s.tumor])) for s in with_liver if np.count_nonzero(s.liver) > 2000]
    assert 40 < np.median(liver_hu) < 160
    darker = [np.median(s.hu[s.tumor]) < np.median(s.hu[s.liver & ~s.tumor]) for s in tumor if s.tumor.sum() > 200]
    assert np.mean(darker) > 0.7


def test_prepared_set_has_full_labels_negatives_and_no_test_volume(collection: Path, tmp_path: Path) -> None:
    subset = tmp_path / "subset"
    (subset / "images").mkdir(parents=True)
    (subset / "masks").mkdir()
    kept = {"3", "9", "5"}  # training, selection, test
    with (collection / "slices.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["lits_volume"] in kept]
    for r in rows:
        (subset / "images" / r["image"]).symlink_to(collection / "images" / r["image"])
        (subset / "masks" / r["mask"]).symlink_to(collection / "masks" / r["mask"])
    with (subset / "slices.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "lits.h5"
    assert prepare_real_main(["lits-tumor", str(subset), "--out", str(out), "--size", "128"]) == 0
    with h5py.File(out) as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f["case_names"][()]]
        splits = [n.decode() if isinstance(n, bytes) else n for n in f["case_split"][()]]
        masks = f["masks"][()]
        assert names == ["lits-3", "lits-9"] and splits == ["train", "val"]  # lits-5 (test) never read
        assert set(np.unique(masks)) == {0, 1, 2}
        assert np.count_nonzero(masks.reshape(len(masks), -1).max(axis=1) == 0) > 5  # liver-free slices kept
        assert not f.attrs["partial_label"]
