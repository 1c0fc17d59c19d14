"""The models shipped in the package load, carry their metadata, and segment a held-out phantom sensibly.

Their measured quality is in runtime/models/*.md (from `make models`); these tests guard against a broken
or mis-oriented bundled model with loose floors, not against a small loss of quality.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from litseg.runtime import Model, RunConfig, default_model_path, segment
from litseg.runtime.dicom_images import SeriesIdentity, ct_datasets
from litseg.train.phantom.case import PhantomOptions, generate_case


@pytest.fixture(scope="module")
def held_out():  # type: ignore[no-untyped-def]
    case = generate_case(987_654, PhantomOptions(slices=24, contrast=True, tumors=2, rows=512))
    return case, ct_datasets(case.hu, SeriesIdentity.derived("HELDOUT"))


@pytest.mark.parametrize("task", ["liver", "liver-tumor"])
def test_bundled_model_segments_a_held_out_phantom(task: str, held_out) -> None:  # type: ignore[no-untyped-def]
    case, datasets = held_out
    path = default_model_path().parent / f"{task}.onnx"
    model = Model(path, device="cpu")
    assert model.spec.task == task
    assert model.spec.target_shape_yx == (256, 256)
    assert "litseg.validation_metrics" in model.info.metadata
    assert (path.with_suffix(".md")).is_file(), "every bundled model has a model card"
    result = segment(datasets, RunConfig(), model=model)
    pred, ref = np.asarray(result.labels.array) > 0, np.asarray(case.labels.array) > 0
    dice = 2 * (pred & ref).sum() / (pred.sum() + ref.sum())
    assert dice > 0.9, f"liver Dice {dice:.3f}"  # a floor against broken models (both score 0.98); quality: the cards
    liver = np.argwhere(pred)
    assert liver[:, 2].mean() < pred.shape[2] / 2  # on the patient's right (canonical columns run to the left)


def test_default_model_is_the_liver_tumor_model() -> None:
    assert default_model_path().name == "liver-tumor.onnx"
    assert Model(default_model_path(), device="cpu").spec.class_names == ("background", "liver", "tumor")


def test_bundled_models_are_small_enough_to_ship() -> None:
    for path in Path(default_model_path().parent).glob("*.onnx"):
        assert path.stat().st_size < 20e6, path
