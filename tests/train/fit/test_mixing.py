"""Several HDF5 sets in one run: epoch ratios, the DDP sampler, per-set validation, refusals, class
weights from the training cases only, and the partial-label (liver-or-tumor) loss."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from litseg.runtime.errors import InputError
from litseg.runtime.spec import PreprocessSpec
from litseg.train.data.h5set import LIVER_OR_TUMOR, H5Set
from litseg.train.fit.checkpoint import load_checkpoint
from litseg.train.fit.dataset import patient_split, read_info
from litseg.train.fit.losses import class_weights, compute_loss
from litseg.train.fit.sampling import EpochPlan, EpochSampler, draws_per_set
from litseg.train.fit.trainer import TrainConfig, main, train

SPEC = PreprocessSpec.for_task("liver-tumor", window_hu=(0.0, 255.0), target_shape_yx=(64, 64))


def write_set(
    path: Path,
    cases: int,
    merged: bool = False,
    spec: PreprocessSpec = SPEC,
    tumor_in: tuple[int, ...] = (),
    split: list[str] | None = None,
    attrs: dict[str, object] | None = None,
) -> Path:
    """A small liver-tumor set through the real writer: 5 slices per case, a liver disc (label 1, or 3 =
    liver-or-tumor when ``merged``), a tumor disc (2) in the cases listed in ``tumor_in``."""
    rng = np.random.default_rng(len(path.name))
    h5 = H5Set(path, spec, "synthetic", attrs)
    yy, xx = np.mgrid[:64, :64]
    for c in range(cases):
        liver = (yy - 30) ** 2 + (xx - 22) ** 2 < (10 + c) ** 2
        masks = np.zeros((5, 64, 64), np.uint8)
        masks[:, liver] = LIVER_OR_TUMOR if merged else 1
        if c in tumor_in:
            masks[:, (yy - 30) ** 2 + (xx - 20) ** 2 < 16] = 2
        images = (0.1 + 0.4 * (masks > 0) + 0.05 * rng.standard_normal(masks.shape)).astype(np.float32)
        h5.append(f"case-{c}", images, masks, np.arange(5), (1.0, 1.0, 2.0), {})
    h5.finish({"case_split": split} if split else None)
    return path


def _config(data: tuple[Path, ...], out: Path, **overrides: object) -> TrainConfig:
    settings: dict[str, object] = {"epochs": 1, "batch_size": 4, "base": 4, "slices_per_epoch": 8, "val_fraction": 0.34}
    settings.update(overrides)
    return TrainConfig(tuple(map(str, data)), str(out), **settings)  # type: ignore[arg-type]


def test_each_epoch_draws_every_set_at_its_ratio() -> None:
    assert draws_per_set([100, 10], 1000, (0.5, 0.5)) == (500, 500)
    assert draws_per_set([100, 10], 1000, None) == (909, 91)  # default: in proportion to the training slices
    assert draws_per_set([100, 10, 5], 7, (1, 1, 1)) == (3, 2, 2)  # largest remainder keeps the total
    with pytest.raises(ValueError, match="no training slices"):
        draws_per_set([100, 0], 10, (0.5, 0.5))
    rare = (np.zeros(40, bool), np.zeros(7, bool))
    plan = EpochPlan((0, 40), rare, draws_per_set([40, 7], 300, (0.7, 0.3)), seed=3)
    first = plan.indices(epoch=0)
    assert first.size == 300 and np.count_nonzero(first >= 40) == 90  # 30 % from the small set
    assert np.array_equal(first, plan.indices(epoch=0)) and not np.array_equal(first, plan.indices(epoch=1))
    # without boost each pass over a set shows every slice once before any repeats
    counts = np.bincount(first[first < 40], minlength=40)
    assert counts.min() >= 5 and counts.max() <= 6  # 210 draws over 40 slices


def test_ddp_ranks_share_the_single_process_epoch_sample() -> None:
    rare = np.zeros(50, bool)
    rare[:5] = True
    plan = EpochPlan((0, 50), (rare, np.zeros(20, bool)), (61, 40), boost=4.0, seed=1)
    single = list(EpochSampler(plan))
    ranks = [EpochSampler(plan, rank, 2) for rank in (0, 1)]
    for sampler in ranks:
        sampler.set_epoch(0)
    shards = [list(s) for s in ranks]
    assert len(shards[0]) == len(shards[1]) == 51  # 101 padded to 102 so both ranks take the same steps
    interleaved = [i for pair in zip(*shards, strict=True) for i in pair]
    assert interleaved[:101] == single and interleaved[101] == single[0]
    boosted = np.array(single)
    assert np.count_nonzero(boosted < 5) / 61 == pytest.approx(5 * 4 / (5 * 4 + 45), abs=0.15)


def test_partial_label_loss_accepts_liver_or_tumor_and_penalises_background() -> None:
    target = torch.zeros(2, 16, 16, dtype=torch.long)
    target[:, 4:12, 4:12] = LIVER_OR_TUMOR

    def confident(cls_inside: int) -> torch.Tensor:
        logits = torch.full((2, 3, 16, 16), -8.0)
        logits[:, 0] = 8.0
        logits[:, :, 4:12, 4:12] = -8.0
        logits[:, cls_inside, 4:12, 4:12] = 8.0
        return logits

    w = torch.tensor([0.5, 1.0, 4.0])
    for name in ("ce", "dice", "ce+dice"):
        liver, tumor, background = (float(compute_loss(name, confident(c), target, w)) for c in (1, 2, 0))
        assert liver == pytest.approx(tumor, abs=1e-6), name  # either class is right inside the merged region
        assert liver < 1e-3 and background > 0.3, name
    # a batch mixing an exact sample with a merged one: the exact one still teaches liver against tumor
    mixed = target.clone()
    mixed[0, 4:12, 4:12] = 1
    right = confident(1)
    wrong = right.clone()
    wrong[0] = confident(2)[0]
    assert compute_loss("ce+dice", right, mixed, w) < compute_loss("ce+dice", wrong, mixed, w)
    with pytest.raises(ValueError, match="3 liver-tumor classes"):
        compute_loss("bce", torch.zeros(1, 2, 4, 4), torch.full((1, 4, 4), LIVER_OR_TUMOR), torch.ones(2))


def test_class_weights_come_from_the_training_cases_only(tmp_path: Path) -> None:
    # the validation case (drawn by the seed) holds all the tumor: weights from the whole set would see it
    info_probe = write_set(tmp_path / "probe.h5", 3)
    _, val_idx = patient_split(read_info(info_probe), 0.34, 0)
    val_case = int(read_info(info_probe).case_index[val_idx[0]])
    data = write_set(tmp_path / "set.h5", 3, tumor_in=(val_case,))
    info = read_info(data)
    train_idx, _ = patient_split(info, 0.34, 0)
    with h5py.File(data) as f:
        masks = f["masks"][np.sort(train_idx)]
    expected = class_weights(np.maximum(np.bincount(masks.ravel(), minlength=3), 1), max_ratio=1000.0)
    best = train(_config((data,), tmp_path / "run"))
    logged = load_checkpoint(best).metrics["class_weights"]
    np.testing.assert_allclose(logged, expected.numpy(), rtol=1e-5)
    whole = class_weights(info.class_voxels, max_ratio=1000.0)
    assert not np.allclose(logged, whole.numpy(), rtol=1e-3)  # what the trainer used to compute


def test_mixed_run_validates_each_set_and_records_the_mix(tmp_path: Path) -> None:
    phantoms = write_set(tmp_path / "phantoms.h5", 3, tumor_in=(0, 1, 2))
    real = write_set(tmp_path / "real.h5", 4, merged=True, split=["train", "train", "val", "val"])
    best = train(_config((phantoms, real), tmp_path / "run", mix=(0.75, 0.25), slices_per_epoch=16, crop=32))
    row = json.loads((tmp_path / "run" / "log.json").read_text())[0]
    assert row["samples"] == 16
    columns = {"val_phantoms_dice_liver", "val_phantoms_dice_tumor", "val_real_dice_liver-or-tumor", "val_score"}
    assert columns <= set(row)
    assert np.isnan(row["val_real_dice_liver"])  # the merged set says nothing of liver against tumor
    assert np.isfinite(row["val_real_dice_background"])  # but knows the background exactly
    data = load_checkpoint(best).metrics["data"]
    assert [s["file"] for s in data["sets"]] == ["phantoms.h5", "real.h5"]
    assert [s["epoch_share"] for s in data["sets"]] == [0.75, 0.25]
    assert data["sets"][1]["val_cases"] == 2  # the split recorded in the set, not val_fraction
    assert data["train_cases"] == 2 + 2


def test_sets_with_other_preprocessing_or_for_testing_only_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_set(tmp_path / "a.h5", 3)
    other = PreprocessSpec.for_task("liver-tumor", window_hu=(-200.0, 300.0), target_shape_yx=(64, 64))
    b = write_set(tmp_path / "b.h5", 3, spec=other)
    with pytest.raises(InputError, match=r"b\.h5 has a different preprocessing spec than .*a\.h5.*--window-hu"):
        train(_config((a, b), tmp_path / "run"))
    test_only = write_set(tmp_path / "ircad.h5", 3, attrs={"use": "test"})
    with pytest.raises(InputError, match="testing only"):
        train(_config((a, test_only), tmp_path / "run"))
    code = main(["--data", str(a), "--data", str(b), "--out", str(tmp_path / "cli"), "--base", "4"])
    assert code == 3 and "different preprocessing spec" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # usage: one share per set
        main(["--data", str(a), "--data", str(a), "--mix", "1", "--out", str(tmp_path / "cli")])


def test_each_copy_of_a_slice_drawn_twice_gets_its_own_augmentation(tmp_path: Path) -> None:
    from litseg.train.fit.training_sets import MixedSlices, epoch_plan, open_sets

    data = write_set(tmp_path / "small.h5", 3)
    config = _config((data,), tmp_path / "run", slices_per_epoch=40, crop=32)  # 10 training slices, 40 draws
    sets = open_sets(config)
    plan = epoch_plan(sets, config)
    encoded = list(EpochSampler(plan, encode_draws=True))
    assert [i % plan.slices for i in encoded] == list(EpochSampler(plan))  # the same sample, copies numbered
    assert sorted(i // plan.slices for i in encoded) == sorted([0, 1, 2, 3] * 10)
    dataset = MixedSlices(sets, config)
    first, again = dataset[3], dataset[3 + plan.slices]
    assert first[0].shape == again[0].shape == (1, 32, 32)
    assert not torch.equal(first[0], again[0])  # another patch or augmentation, not a duplicate
    assert torch.equal(dataset[3][0], first[0])  # and each copy is reproducible
