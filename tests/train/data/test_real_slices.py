"""Real CT slices (../shared/data): loaders, orientation recovery under all 8 transforms, the fixed MSD
split, the HDF5 set litseg-train reads, and per-slice evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from litseg.runtime.spec import PreprocessSpec
from litseg.train.data import orientation as so
from litseg.train.data.h5set import LIVER_OR_TUMOR
from litseg.train.data.prepare_real import main as prepare_real_main
from litseg.train.data.real_slices import (
    MSD_VALIDATION_CASES,
    ROT180,
    RealSlice,
    _grey,
    load_ircad,
    load_msd,
    msd_files,
)
from litseg.train.evaluate.slices import main as eval_slices_main
from litseg.train.fit.dataset import patient_split, read_info
from litseg.train.fit.trainer import TrainConfig, load_checkpoint, train
from litseg.train.phantom.case import PhantomOptions, generate_case
from tests.conftest import shared_data
from tests.factories import make_intensity_model


@pytest.fixture(scope="module")
def msd() -> list[RealSlice]:
    return load_msd(shared_data("msd-liver-slices"))


@pytest.fixture(scope="module")
def ircad() -> list[RealSlice]:
    return load_ircad(shared_data("ircad-liver-slices"))


def msd_subset(folder: Path, cases: tuple[int, ...]) -> Path:
    """A collection folder linking the real files of a few MSD patients (nothing copied)."""
    source = shared_data("msd-liver-slices")
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True)
        for path in sorted((source / sub).iterdir()):
            if int(path.name.split("_")[1]) in cases:
                (folder / sub / path.name).symlink_to(path)
    return folder


def test_msd_loader_reads_every_patient_and_slice_once(msd: list[RealSlice]) -> None:
    assert len({s.patient for s in msd}) == 122
    assert len(msd) == 643 - 20  # 20 slices are stored under both prefixes
    assert len({(s.patient, s.slice_index) for s in msd}) == len(msd)
    for s in msd[::50]:
        assert s.hu.shape == (256, 256) and s.hu.dtype == np.float32 and s.hu.min() >= 0 and s.hu.max() <= 255
        assert s.liver.dtype == np.bool_ and s.liver.any() and s.hu_map is None


def test_msd_copies_under_both_prefixes_are_one_slice_turned_by_180_degrees() -> None:
    pairs = [copies for copies in msd_files(shared_data("msd-liver-slices")).values() if len(copies) == 2]
    assert len(pairs) == 20
    for copies in pairs:
        grey = {prefix: _grey(image).astype(np.float32) for prefix, image, _ in copies}
        turned = so.apply(ROT180, grey["flipped"])
        assert float(np.abs(turned - grey["mirrored"]).mean()) < 3.0  # JPEG noise only


def test_the_msd_split_is_fixed_and_patient_wise(msd: list[RealSlice]) -> None:
    cases = sorted({int(s.patient.split("-")[1]) for s in msd})
    redrawn = sorted(int(c) for c in np.random.default_rng(13).permutation(cases)[:22])
    assert list(MSD_VALIDATION_CASES) == redrawn  # as documented beside the constant
    assert len(set(MSD_VALIDATION_CASES)) == 22 and set(MSD_VALIDATION_CASES) <= set(cases)


def test_the_rule_is_confident_on_msd_and_agrees_with_each_patients_verdict(msd: list[RealSlice]) -> None:
    """Each slice judged alone against its patient's pooled verdict (all 122 checked by eye: liver on the
    image's left, spine at the bottom)."""
    agree = np.mean([s.agrees for s in msd])
    confident = np.mean([s.orientation.margin > 0.2 for s in msd])
    assert agree >= 0.97 and confident >= 0.95, (agree, confident)
    # 122 independent patient verdicts agree on one transform of the "mirrored" frame: the Decathlon stores
    # every volume with the same axes, so the anatomy found the same answer for every patient
    assert len({so.compose(ROT180, s.transform) if "flipped" in s.name else s.transform for s in msd}) == 1


def _phantom_slice() -> tuple[np.ndarray, np.ndarray]:
    case = generate_case(7, PhantomOptions(rows=160, slices=10, tumors=1, contrast=True))
    labels = np.asarray(case.labels.array)
    z = int(np.argmax((labels > 0).sum(axis=(1, 2))))
    return np.asarray(case.hu.array, dtype=np.float32)[z], labels[z] > 0


def _canonical_again(hu: np.ndarray, liver: np.ndarray) -> list[np.ndarray]:
    """The slice recovered from each of its 8 transforms."""
    out = []
    for t in so.DIHEDRAL:
        moved_hu, moved_liver = so.apply(t, hu), so.apply(t, liver)
        out.append(so.apply(so.recover(moved_hu, moved_liver).transform, moved_hu))
    return out


def test_every_transform_of_a_slice_recovers_the_canonical_slice(msd: list[RealSlice], ircad: list[RealSlice]) -> None:
    samples = [(s.hu, s.liver) for s in msd[::60] if s.agrees] + [(s.hu, s.liver) for s in ircad[::9]]
    samples.append(_phantom_slice())  # the phantom is generated canonical (LPS)
    assert len(samples) >= 14
    for hu, liver in samples:
        for recovered in _canonical_again(hu, liver):
            assert np.array_equal(recovered, hu)
    # a slice the rule gets wrong alone is still wrong the same way from every transform (equivariance)
    stubborn = next(s for s in msd if not s.agrees)
    results = _canonical_again(stubborn.hu, stubborn.liver)
    assert all(np.array_equal(r, results[0]) for r in results) and not np.array_equal(results[0], stubborn.hu)


def test_ircad_slices_are_mapped_to_hu_and_turned_alike(ircad: list[RealSlice]) -> None:
    assert len(ircad) == 36 and len({s.patient for s in ircad}) == 16
    assert len({s.transform for s in ircad}) == 1  # the collection rotated every slice the same way
    assert all(s.orientation.margin > 0.2 for s in ircad)
    assert all(s.hu.shape == (512, 512) and s.hu_map is not None for s in ircad)
    soft = [float(np.median(s.hu[s.liver])) for s in ircad]
    assert np.mean([0 < v < 200 for v in soft]) >= 0.9, soft  # liver HU in any contrast phase


def test_prepared_msd_set_is_what_the_runtime_feeds_and_trains(tmp_path: Path) -> None:
    # clean split: 10001 and 10004 train, 10002 selection, 10003 excluded (LiTS 10, a lits-tumor test
    # volume), 10008 report: the last two are never written into a set that could be trained or chosen on
    folder = msd_subset(tmp_path / "msd", (10001, 10002, 10003, 10004, 10008))
    for task, value in (("liver-tumor", LIVER_OR_TUMOR), ("liver", 1)):
        out = tmp_path / f"msd-{task}.h5"
        assert prepare_real_main(["msd", str(folder), "--out", str(out), "--task", task]) == 0
        info = read_info(out)
        assert info.spec.window_hu == (0.0, 255.0) and info.task == task
        assert info.case_names == ("msd-10001", "msd-10002", "msd-10004")
        assert info.case_split == ("train", "val", "train")
        train_idx, val_idx = patient_split(info, 0.5, seed=99)  # the recorded split wins
        assert set(info.case_index[val_idx]) == {1} and set(info.case_index[train_idx]) == {0, 2}
        with h5py.File(out) as f:
            assert set(np.unique(f["masks"][:])) == {0, value}
            assert np.isnan(f["case_spacing_mm"][:]).all()
            first = load_msd(folder, {10001})[0]
            np.testing.assert_allclose(f["images"][0], first.hu / 255.0, atol=1e-6)  # grey g -> g / 255
    data = (str(tmp_path / "msd-liver-tumor.h5"),)
    best = train(TrainConfig(data, str(tmp_path / "run"), epochs=1, batch_size=2, base=4, slices_per_epoch=4, crop=64))
    row = load_checkpoint(best).metrics["history"][0]
    assert 0.0 <= row["val_dice_liver-or-tumor"] <= 1.0 and np.isnan(row["val_dice_tumor"])


def test_ircad_set_is_test_only(tmp_path: Path) -> None:
    out = tmp_path / "ircad.h5"
    assert prepare_real_main(["ircad", str(shared_data("ircad-liver-slices")), "--out", str(out), "--size", "64"]) == 0
    with h5py.File(out) as f:
        assert f.attrs["use"] == "test" and "3D-IRCADb" in str(f.attrs["provenance"])
    from litseg.runtime.errors import InputError

    with pytest.raises(InputError, match="testing only"):
        train(TrainConfig((str(out),), str(tmp_path / "run"), epochs=1, base=4))


def test_per_slice_evaluation_of_a_model_on_the_validation_patients(tmp_path: Path) -> None:
    folder = msd_subset(tmp_path / "msd", (10001, 10002))
    spec = PreprocessSpec.for_task("liver", window_hu=(0.0, 255.0), target_shape_yx=(128, 128))
    model = make_intensity_model(tmp_path / "liver.onnx", spec)
    out = tmp_path / "eval.json"
    assert eval_slices_main([str(model), "msd", str(folder), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["split"] == "val" and result["patients"] == 1 and result["msd_input_exact"]
    assert {c["patient"] for c in result["cases"]} == {"msd-10002"}
    assert result["slices"] == len(result["cases"]) == len(load_msd(folder, {10002}))
    dice = [c["dice"] for c in result["cases"]]
    assert result["liver_dice_per_slice_mean"] == pytest.approx(np.mean(dice))
    assert 0.0 < result["liver_dice_per_slice_mean"] < 1.0  # an intensity threshold finds part of the liver
