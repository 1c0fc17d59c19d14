from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from litseg.runtime import kernels
from litseg.runtime.errors import DeviceError, ModelError
from litseg.runtime.model import Model, choose_providers, cuda_device_count
from litseg.runtime.postprocess import clean_labels, drop_small_tumors, grow_tumors, measure, postprocess_labels
from litseg.runtime.spec import PreprocessSpec
from litseg.runtime.volume import Volume
from tests.factories import make_intensity_model, with_metadata


def test_model_reads_spec_and_runs_on_cpu(tumor_model: Path) -> None:
    model = Model(tumor_model, device="cpu")
    assert model.provider == "CPUExecutionProvider"
    assert model.spec.class_names == ("background", "liver", "tumor")
    assert model.info.name == "test-intensity"
    probs = model.predict_volume(np.full((5, 64, 64), 0.6, np.float32), batch_size=2)
    assert probs.shape == (5, 3, 64, 64)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (probs.argmax(1) == 1).all()  # 0.6 = 100 HU = liver


def test_model_without_metadata_is_refused_naming_the_keys(tmp_path: Path) -> None:
    path = make_intensity_model(tmp_path / "bare.onnx", metadata=False)
    with pytest.raises(ModelError, match=r"lacks the litseg metadata \['litseg.preprocess_spec'.*litseg-export"):
        Model(path, device="cpu")


def test_missing_and_corrupt_model_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model file not found"):
        Model(tmp_path / "nope.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelError, match="cannot load model"):
        Model(tmp_path / "junk.onnx", device="cpu")


def test_model_with_an_unknown_spec_version_is_refused(tmp_path: Path) -> None:
    path = make_intensity_model(tmp_path / "m.onnx")
    import onnx

    proto = onnx.load(str(path))
    for prop in proto.metadata_props:
        if prop.key == "litseg.preprocess_spec":
            prop.value = prop.value.replace('"version": 1', '"version": 99')
    onnx.save(proto, str(path))
    with pytest.raises(ModelError, match="version 99 is not supported"):
        Model(path, device="cpu")


@pytest.mark.skipif(cuda_device_count() > 0, reason="this check is for machines without a GPU")
def test_gpu_request_without_gpu_is_a_clear_error(tumor_model: Path) -> None:
    assert choose_providers("auto") == ["CPUExecutionProvider"]
    with pytest.raises(DeviceError, match=r"no usable CUDA GPU.*--device cpu"):
        Model(tumor_model, device="gpu")
    with pytest.raises(DeviceError, match="device must be one of"):
        choose_providers("tpu")


@pytest.mark.gpu
def test_gpu_runs_on_cuda_and_matches_cpu(tumor_model: Path) -> None:
    gpu = Model(tumor_model, device="gpu")
    cpu = Model(tumor_model, device="cpu")
    assert gpu.provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
    x = np.random.default_rng(0).random((4, 1, 64, 64)).astype(np.float32)
    np.testing.assert_allclose(gpu.predict(x), cpu.predict(x), atol=1e-4)


def test_spec_round_trips_and_validates() -> None:
    spec = PreprocessSpec.for_task("liver", window_hu=(-100, 200))
    assert PreprocessSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ValueError, match="class_names for task 'liver'"):
        PreprocessSpec(task="liver")
    with pytest.raises(ValueError, match="unknown fields"):
        PreprocessSpec.from_json('{"task": "liver", "colour": 1}')


def test_clean_labels_keeps_tumor_inside_the_largest_liver() -> None:
    labels = np.zeros((3, 20, 20), np.uint8)
    labels[:, 2:12, 2:12] = 1  # big liver
    labels[1, 5:8, 5:8] = 2  # tumor inside it
    labels[:, 15:18, 15:18] = 1  # small false-positive island
    labels[1, 0, 18:20] = 2  # tumor floating outside any liver
    cleaned = clean_labels(labels, largest_component=True)
    assert cleaned[:, 15:18, 15:18].max() == 0
    assert cleaned[1, 0, 18:20].max() == 0
    assert (cleaned[1, 5:8, 5:8] == 2).all()
    kept = clean_labels(labels, largest_component=False)
    assert (kept[:, 15:18, 15:18] == 1).all()
    assert kept[1, 0, 18:20].max() == 0
    assert clean_labels(np.zeros((2, 2, 2), np.uint8)).max() == 0


def test_measure_volumes_count_and_burden() -> None:
    labels = np.zeros((4, 10, 10), np.uint8)
    labels[:, :, :5] = 1
    labels[0, 0, 0] = 2
    labels[3, 9, 4] = 2
    m = measure(Volume(labels, np.diag([2.0, 2.0, 2.5, 1.0])))  # 10 mm^3 voxels
    assert m.tumor_count == 2
    assert m.tumor_volume_ml == pytest.approx(2 * 0.01)
    assert m.parenchyma_volume_ml == pytest.approx(198 * 0.01)
    assert m.liver_volume_ml == pytest.approx(200 * 0.01)  # the whole liver: tumours included
    assert m.tumor_burden_percent == pytest.approx(100 * 2 / 200)


def test_small_tumors_become_liver_and_larger_ones_stay() -> None:
    labels = np.zeros((3, 20, 20), np.uint8)
    labels[:, 2:18, 2:18] = 1
    labels[1, 4:6, 4:6] = 2  # 4 voxels
    labels[0:3, 10:14, 10:14] = 2  # 48 voxels
    out = drop_small_tumors(labels, min_voxels=5)
    assert (out[1, 4:6, 4:6] == 1).all() and (out[0:3, 10:14, 10:14] == 2).all()
    assert (out > 0).sum() == (labels > 0).sum()  # the organ is unchanged
    assert np.array_equal(drop_small_tumors(labels, 0), labels)
    assert (drop_small_tumors(labels, 49) == 2).sum() == 0


def test_min_tumor_ml_reaches_the_result(tumor_model: Path) -> None:
    from litseg.runtime import RunConfig, segment
    from tests.factories import make_series

    datasets = make_series()
    every = segment(datasets, RunConfig(model=tumor_model))
    none = segment(datasets, RunConfig(model=tumor_model, min_tumor_ml=1e6))
    assert every.measurements.tumor_count >= 1 and none.measurements.tumor_count == 0
    whole = every.measurements.parenchyma_volume_ml + every.measurements.tumor_volume_ml
    assert every.measurements.liver_volume_ml == pytest.approx(whole)
    assert none.measurements.parenchyma_volume_ml == pytest.approx(whole) == none.measurements.liver_volume_ml
    with pytest.raises(ValueError, match="min_tumor_ml"):
        RunConfig(min_tumor_ml=-1.0)


def test_min_tumor_ml_calibrated_with_the_model_is_the_default(tmp_path: Path) -> None:
    from litseg.runtime import RunConfig, segment
    from tests.factories import make_series

    calibrated = with_metadata(
        make_intensity_model(tmp_path / "cal.onnx"), "litseg.postprocess", '{"tumor_margin_mm": 0, "min_tumor_ml": 100}'
    )
    assert Model(calibrated, device="cpu").info.min_tumor_ml == 100.0
    datasets = make_series()
    dropped = segment(datasets, RunConfig(model=calibrated))  # the model's 100 mL: no tumor is that large
    kept = segment(datasets, RunConfig(model=calibrated, min_tumor_ml=0.0))  # the caller's 0 keeps them
    assert dropped.measurements.tumor_count == 0 and kept.measurements.tumor_count >= 1
    assert dropped.report()["min_tumor_ml"] == 100.0 and kept.report()["min_tumor_ml"] == 0.0


def test_grow_label_matches_a_brute_force_reference() -> None:
    rng = np.random.default_rng(3)
    labels = np.zeros((4, 30, 40), np.uint8)
    labels[:, 3:27, 4:36] = 1
    labels[rng.random(labels.shape) < 0.01] = 2
    labels[0, 0, 0] = 2  # a tumor voxel at the array border
    dy, dx = 0.7, 1.3  # anisotropic pixels: the margin is in millimetres, not pixels
    out = kernels.grow_label(labels, 2, 1, 2.0, (dy, dx))
    expected = labels.copy()
    for k, j, i in np.argwhere(labels == 1):
        tumor = np.argwhere(labels[k] == 2)  # the same slice only
        if (((tumor[:, 0] - j) * dy) ** 2 + ((tumor[:, 1] - i) * dx) ** 2 <= 4.0).any():
            expected[k, j, i] = 2
    assert np.array_equal(out, expected)
    assert (out != labels).sum() > 100
    assert (out[labels == 0] == 0).all()  # growth never leaves the organ
    with pytest.raises(ValueError, match="spacing_yx_mm must be > 0"):
        kernels.grow_label(labels, 2, 1, 2.0, (0.0, 1.0))


def test_grow_tumors_keeps_geometry_and_a_zero_margin_is_off() -> None:
    labels = np.zeros((2, 20, 20), np.uint8)
    labels[:, 2:18, 2:18] = 1
    labels[:, 9:11, 9:11] = 2
    volume = Volume(labels, np.diag([0.5, 0.5, 3.0, 1.0]))
    assert grow_tumors(volume, 0.0) is volume
    grown = grow_tumors(volume, 1.0)  # 2 pixels of 0.5 mm
    assert np.array_equal(grown.affine_lps, volume.affine_lps)
    # the 2x2 square grown by 2 px: 6x6 less the three pixels at each corner farther than 2 px (sqrt 5, sqrt 8)
    assert (np.asarray(grown.array)[0] == 2).sum() == 6 * 6 - 4 * 3
    assert ((np.asarray(grown.array) > 0) == (labels > 0)).all()


def test_postprocess_in_the_box_equals_the_whole_volume_and_can_write_into_the_callers_array() -> None:
    labels = np.zeros((12, 40, 40), np.uint8)
    labels[2:9, 5:25, 6:30] = 1  # liver
    labels[4:6, 10:14, 10:14] = 2  # tumor inside
    labels[10:12, 30:35, 30:35] = 1  # a false-positive island (largest component drops it)
    labels[5, 12, 20] = 2  # a one-voxel tumor (the small-tumor filter makes it liver)
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    whole = grow_tumors(Volume(drop_small_tumors(clean_labels(labels), 2), affine), 1.6)
    mine = labels.copy()
    kept = mine.copy()
    assert np.array_equal(np.asarray(postprocess_labels(Volume(kept, affine), True, 2, 1.6).array), whole.array)
    assert np.array_equal(kept, labels)  # without out: a new array
    result = postprocess_labels(Volume(mine, affine), True, 2, 1.6, out=mine)
    assert np.array_equal(mine, whole.array) and np.shares_memory(np.asarray(result.array), mine)
    other = labels.copy()
    with pytest.raises(ValueError, match="out must be"):
        postprocess_labels(Volume(labels, affine), True, 2, 1.6, out=other)


def test_tumor_margin_comes_from_the_model_and_can_be_turned_off(tmp_path: Path) -> None:
    from litseg.runtime import RunConfig, segment
    from tests.factories import make_series

    plain = make_intensity_model(tmp_path / "plain.onnx")
    # 4 mm pixels in make_series: a 5 mm margin grows the tumor by one pixel
    calibrated = with_metadata(
        make_intensity_model(tmp_path / "cal.onnx"), "litseg.postprocess", '{"tumor_margin_mm": 5.0}'
    )
    assert Model(calibrated, device="cpu").info.tumor_margin_mm == 5.0
    assert Model(plain, device="cpu").info.tumor_margin_mm == 0.0
    datasets = make_series()
    base = segment(datasets, RunConfig(model=plain))
    grown = segment(datasets, RunConfig(model=calibrated))
    off = segment(datasets, RunConfig(model=calibrated, tumor_margin_mm=0.0))
    assert grown.measurements.tumor_volume_ml > base.measurements.tumor_volume_ml > 0
    organ = base.measurements.liver_volume_ml  # the whole liver: growing tumours into it does not change it
    assert grown.measurements.liver_volume_ml == pytest.approx(organ)
    assert grown.measurements.parenchyma_volume_ml < base.measurements.parenchyma_volume_ml
    assert np.array_equal(np.asarray(off.labels.array), np.asarray(base.labels.array))
    assert grown.report()["tumor_margin_mm"] == 5.0 and off.report()["tumor_margin_mm"] == 0.0
    with pytest.raises(ValueError, match=r"tumor_margin_mm must be 0 to 20\.0 mm; got -1\.0"):
        RunConfig(tumor_margin_mm=-1.0)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not json", r"invalid litseg.postprocess 'not json'.*\"tumor_margin_mm\": 2.0"),
        ('{"tumor_margin_mm": 50}', r"tumor_margin_mm 50.0 in litseg.postprocess; expected 0 to 20.0 mm"),
        ('{"min_tumor_ml": -1}', r"min_tumor_ml -1.0 in litseg.postprocess; expected 0 to 100.0 mL"),
    ],
)
def test_invalid_postprocess_metadata_is_refused(tmp_path: Path, value: str, message: str) -> None:
    path = with_metadata(make_intensity_model(tmp_path / "m.onnx"), "litseg.postprocess", value)
    with pytest.raises(ModelError, match=message):
        Model(path, device="cpu")
