"""Test-time shifts: the shifted passes land back on the pixels they came from, and the mean is exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from litseg.runtime import Model, RunConfig, default_model_path, segment
from litseg.runtime.errors import ModelError
from litseg.runtime.model import check_tta_shifts, shift_slices
from tests.factories import make_intensity_model, make_series, with_metadata


def test_shift_slices_moves_content_by_dy_dx_and_fills_air() -> None:
    image = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6) + 1
    moved = shift_slices(image, 2, -1)
    assert np.array_equal(moved[:, 2:, :5], image[:, :3, 1:])  # content at (y, x) is now at (y + 2, x - 1)
    assert (moved[:, :2] == 0).all() and (moved[:, :, 5] == 0).all()  # uncovered pixels: 0, the window's air


def test_shifted_passes_return_to_their_pixels_with_a_pointwise_model(tmp_path: Path) -> None:
    # a pointwise model gives every pass the same probability for a pixel, wherever the pixel was moved: any
    # misplaced shift-back (a mirrored or displaced pass) would mix in a neighbour's value of this random image
    model = Model(make_intensity_model(tmp_path / "m.onnx"), device="cpu")
    image = np.random.default_rng(5).random((3, 40, 48), dtype=np.float32)
    one = model.predict_volume(image)
    for shifts in (((0, 0), (8, 8)), ((0, 0), (-3, 5), (7, -2))):
        assert np.allclose(model.predict_volume(image, batch_size=2, shifts=shifts), one, atol=1e-6)


def test_tta_is_the_mean_of_the_shifted_back_passes_of_the_bundled_unet() -> None:
    model = Model(default_model_path(), device="cpu")
    image = np.random.default_rng(6).random((2, 256, 256), dtype=np.float32)
    p0 = model.predict(image[:, None])
    p1 = model.predict(shift_slices(image, 8, 8)[:, None])
    expected = p0.copy()
    expected[:, :, :-8, :-8] = (p0[:, :, :-8, :-8] + p1[:, :, 8:, 8:]) / 2  # the last 8 rows/columns: one pass
    got = model.predict_volume(image, shifts=((0, 0), (8, 8)))
    assert np.allclose(got, expected, atol=1e-6)
    assert not np.allclose(got, p0, atol=1e-3)  # the U-Net is not shift-invariant: the passes differ


def test_tta_shifts_come_from_the_model_and_can_be_turned_off(tmp_path: Path) -> None:
    plain = make_intensity_model(tmp_path / "plain.onnx")
    calibrated = with_metadata(
        make_intensity_model(tmp_path / "cal.onnx"), "litseg.inference", '{"tta_shifts_px": [[0, 0], [8, 8]]}'
    )
    assert Model(calibrated, device="cpu").info.tta_shifts_px == ((0, 0), (8, 8))
    assert Model(plain, device="cpu").info.tta_shifts_px == ((0, 0),)
    datasets = make_series()
    base = segment(datasets, RunConfig(model=plain))
    tta = segment(datasets, RunConfig(model=calibrated))
    off = segment(datasets, RunConfig(model=calibrated, tta=False))
    assert tta.report()["tta_shifts_px"] == [[0, 0], [8, 8]] and off.report()["tta_shifts_px"] == [[0, 0]]
    assert base.report()["tta_shifts_px"] == [[0, 0]]
    assert np.array_equal(np.asarray(off.labels.array), np.asarray(base.labels.array))
    assert np.array_equal(np.asarray(tta.labels.array), np.asarray(base.labels.array))  # pointwise model


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[0, 0]", r"invalid litseg.inference '\[0, 0\]' \(not a JSON object\).*\"tta_shifts_px\""),
        ('{"tta_shifts_px": [[8, 8]]}', r"must include \[0, 0\]"),
        ('{"tta_shifts_px": [[0, 0], [0, 0]]}', r"repeats a shift"),
        ('{"tta_shifts_px": [[0, 0], [8, 8.5]]}', r"integers within \+-64 px; got \[8, 8.5\]"),
        ('{"tta_shifts_px": [[0, 0], [100, 0]]}', r"got \[100, 0\]"),
        ('{"tta_shifts_px": []}', r"list of 1 to 8"),
    ],
)
def test_invalid_inference_metadata_is_refused(tmp_path: Path, value: str, message: str) -> None:
    path = with_metadata(make_intensity_model(tmp_path / "m.onnx"), "litseg.inference", value)
    with pytest.raises(ModelError, match=message):
        Model(path, device="cpu")


def test_check_tta_shifts_returns_tuples() -> None:
    assert check_tta_shifts([[0, 0], [-4, 4]]) == ((0, 0), (-4, 4))
    with pytest.raises(ValueError, match="must include"):
        check_tta_shifts(((1, 1),))


def test_cli_no_tta_runs_one_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from litseg.runtime.cli import main
    from tests.factories import write_series

    calibrated = with_metadata(
        make_intensity_model(tmp_path / "cal.onnx"), "litseg.inference", '{"tta_shifts_px": [[0, 0], [8, 8]]}'
    )
    write_series(make_series(), tmp_path / "in")
    for flags, expected in (([], [[0, 0], [8, 8]]), (["--no-tta"], [[0, 0]])):
        out = tmp_path / f"out{len(flags)}"
        assert main([str(tmp_path / "in"), "--model", str(calibrated), "--out", str(out), "--quiet", *flags]) == 0
        assert json.loads((out / "report.json").read_text())["tta_shifts_px"] == expected
