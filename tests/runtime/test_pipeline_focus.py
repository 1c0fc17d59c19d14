"""The pipelined model stage and its focus: batching and overlap change nothing, and the focus keeps every
slice and pixel of the liver."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from litseg.runtime import kernels
from litseg.runtime.focus import (
    BODY_MARGIN_PX,
    MAX_GAP_MM,
    MIN_SLICES_FOR_FOCUS,
    FocusPart,
    body_box,
    coarse_slices,
    find_focus,
)
from litseg.runtime.model import Model
from litseg.runtime.pipeline import native_region, run_model
from litseg.runtime.preprocess import preprocess, restore_labels
from litseg.runtime.series import read_series
from litseg.runtime.spec import PreprocessSpec
from tests.factories import LIVER_CENTER_LPS, SeriesGeometry, make_intensity_model, make_series, phantom_labels

TALL = dict(rows=64, columns=72, slices=40, pixel_spacing_mm=(4.0, 4.0), slice_spacing_mm=3.0, center_lps=(0, 0, 8))


@pytest.mark.parametrize(
    ("row_dir", "col_dir"), [((1, 0, 0), (0, 1, 0)), ((0, -1, 0), (1, 0, 0)), ((-1, 0, 0), (0, -1, 0))]
)
def test_pipeline_without_focus_equals_the_plain_steps(row_dir, col_dir, tumor_model: Path) -> None:  # type: ignore[no-untyped-def]
    geo = SeriesGeometry(**TALL, row_direction=row_dir, column_direction=col_dir)  # type: ignore[arg-type]
    volume = read_series(make_series(geo)).volume
    model = Model(tumor_model, device="cpu")
    plain_input = preprocess(volume, model.spec)
    probs = model.predict_volume(np.asarray(plain_input.image.array, dtype=np.float32), batch_size=5)
    plain = restore_labels(probs, plain_input, volume).array
    run = run_model(volume, model, batch_size=5, use_focus=False)  # 5 overlapped steps of 8 slices, calls of 5
    np.testing.assert_array_equal(run.labels, plain)
    assert run.focus.z_range == (0, 40)


def test_focus_keeps_every_liver_slice_and_pixel(tmp_path: Path) -> None:
    geo = SeriesGeometry(**TALL)  # type: ignore[arg-type]
    volume = read_series(make_series(geo)).volume
    truth = phantom_labels(geo.world_grid())
    model = Model(make_intensity_model(tmp_path / "m.onnx", PreprocessSpec()), device="cpu")  # the 256 grid
    focused = run_model(volume, model, batch_size=4, use_focus=True)
    everything = run_model(volume, model, batch_size=4, use_focus=False)
    liver_slices = np.flatnonzero(truth.reshape(40, -1).any(1))
    z0, z1 = focused.focus.z_range
    assert 0 < z0 <= liver_slices[0] and liver_slices[-1] < z1 < 40  # slices without liver were skipped
    y0, y1, x0, x1 = focused.focus.box_yx
    assert (y1 - y0) * (x1 - x0) < 0.8 * 256 * 256  # and so was part of the grid
    # a pointwise model sees the same pixels either way: the labels are identical, also where the full pass
    # took the coarse pass' probabilities instead of running a slice again
    np.testing.assert_array_equal(focused.labels, everything.labels)
    assert 0 < focused.reused_slices < focused.focus.slices
    shifted = run_model(volume, model, batch_size=4, shifts=((0, 0), (0, 8)), use_focus=True)
    assert shifted.reused_slices == 0  # test-time shifts: the coarse pass (one unshifted pass) is not the same
    assert focused.labels.any()


def test_no_liver_in_the_coarse_pass_means_no_full_pass(tumor_model: Path) -> None:
    geo = SeriesGeometry(**{**TALL, "center_lps": (0, 0, 400)})  # type: ignore[arg-type]  # far above the liver
    volume = read_series(make_series(geo)).volume
    run = run_model(volume, Model(tumor_model, device="cpu"), use_focus=True)
    assert run.focus.empty and not run.labels.any()
    assert LIVER_CENTER_LPS[2] < 100


def test_short_series_are_not_focused() -> None:
    calls: list[int] = []
    focus = find_focus(MIN_SLICES_FOR_FOCUS - 1, 1.0, (64, 64), lambda picks, box: calls.append(1) or np.zeros(1))  # type: ignore[func-returns-value]
    assert focus.z_range == (0, MIN_SLICES_FOR_FOCUS - 1) and calls == []


def _seen_in(*zones: tuple[int, int]):  # type: ignore[no-untyped-def]
    """A coarse pass that sees a 20 x 20 px blob on the slices inside any of ``zones``."""

    def labels_of(picks: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        labels = np.zeros((len(picks), 64, 64), np.uint8)
        for n, z in enumerate(picks):
            if any(lo <= z < hi for lo, hi in zones):
                labels[n, 20:40, 20:40] = 1
        return labels

    return labels_of


def test_foreground_far_apart_gets_separate_slice_ranges() -> None:
    # 1 mm slices: coarse step 10; a liver on 200-350 and a blob the coarse pass calls liver on 20-35
    focus = find_focus(432, 1.0, (64, 64), _seen_in((200, 350), (20, 35)))
    assert [(p.z0, p.z1) for p in focus.parts] == [(10, 41), (190, 351)]  # one coarse step beyond each
    assert focus.slices == 31 + 161  # the slices between were skipped
    blob, liver = focus.parts
    assert blob.box_yx == liver.box_yx == (0, 64, 0, 64)  # (a 64 px grid: the margin reaches every edge)


def test_foreground_within_the_gap_shares_one_range() -> None:
    gap = int(MAX_GAP_MM) - 10  # one empty coarse slice between the two parts
    focus = find_focus(432, 1.0, (64, 64), _seen_in((200, 300), (300 + gap, 360)))
    assert [(p.z0, p.z1) for p in focus.parts] == [(190, 361)]


def test_coarse_slices_step_about_10_mm_and_include_both_ends() -> None:
    picks = coarse_slices(432, 0.8)
    assert picks[0] == 0 and picks[-1] == 431
    assert set(np.diff(picks)[:-1]) == {12}


@pytest.mark.parametrize(("n_model", "n_native"), [(256, 512), (256, 200), (64, 512)])
def test_native_region_covers_every_pixel_the_box_can_change(n_model: int, n_native: int) -> None:
    rng = np.random.default_rng(0)
    for lo, hi in [(0, 16), (n_model // 4, n_model // 2), (n_model - 16, n_model)]:
        probs = np.zeros((1, 2, n_model, n_model), np.float32)
        probs[:, 0] = 1.0
        probs[:, :, lo:hi, :] = rng.random((1, 2, hi - lo, n_model)).astype(np.float32)
        full = kernels.resample_argmax(probs, (n_native, n_native))
        a, b = native_region((lo, hi), n_model, n_native)
        outside = np.ones(n_native, bool)
        outside[a:b] = False
        assert not full[0, outside].any()  # nothing but background outside the region


def test_body_box_bounds_the_body_on_the_model_grid_with_air_around_it() -> None:
    body = np.zeros((512, 400), np.bool_)  # canonical native pixels: 512 rows, 400 columns -> a 256 grid
    body[100:301, 50:251] = True
    # rows 100..300 -> grid 50..151, columns 50..250 -> 32..161; 16 px of air, aligned to 16
    assert body_box(body, (256, 256)) == (32, 176, 16, 192)
    assert BODY_MARGIN_PX == 16
    assert body_box(np.zeros((8, 8), np.bool_), (256, 256)) is None
    body[:] = True
    assert body_box(body, (256, 256)) == (0, 256, 0, 256)


def test_blocks_take_the_boxes_of_the_coarse_slices_around_them() -> None:
    small, large, mid = (16, 48, 16, 48), (0, 64, 0, 64), (16, 64, 0, 48)
    part = FocusPart(0, 100, large, ((10, small), (20, small), (30, mid), (40, large), (50, small), (60, small)))
    assert part.block_box(0, 8) == small  # before the first seen slice: 10, and 20 beyond it
    assert part.block_box(11, 19) == mid  # bracketed by 10 and 20; one more on either side: (none), 30
    assert part.block_box(51, 59) == large  # bracketed by 50 and 60; one more on either side: 40 (large)
    assert part.block_box(61, 69) == small  # after 60: 50 and 60 only, the large slice 40 is out of reach
    assert part.block_box(90, 98) == small  # after the last seen slice: 60, and 50 before it
    assert FocusPart(0, 10, large).block_box(0, 8) == large  # no per-slice boxes: the envelope


def test_the_body_bounds_the_coarse_pass_and_every_box() -> None:
    boxes: list[tuple[int, int, int, int]] = []

    def labels_of(picks: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        boxes.append(box)
        labels = np.zeros((len(picks), 64, 64), np.uint8)
        labels[(picks >= 100) & (picks < 200), 20:40, 2:22] = 1
        return labels

    focus = find_focus(300, 1.0, (64, 64), labels_of, lambda picks: (0, 64, 0, 48))
    assert boxes == [(0, 64, 0, 48)]  # the coarse pass ran on the body's box
    assert all(box[3] <= 48 for _, _, box in focus.blocks(8))  # no block reaches beyond the body


def test_on_a_gpu_every_call_sees_the_whole_grid(tmp_path: Path) -> None:
    # one input shape per run on a GPU (each new shape there costs a cuDNN search or a TensorRT build); the
    # provider is the only thing that differs, so a CPU session stands in for the GPU one
    volume = read_series(make_series(SeriesGeometry(**TALL))).volume  # type: ignore[arg-type]
    model = Model(make_intensity_model(tmp_path / "m.onnx", PreprocessSpec()), device="cpu")
    shapes: list[tuple[int, ...]] = []
    predict = model.predict
    model.predict = lambda batch: shapes.append(batch.shape) or predict(batch)  # type: ignore[method-assign]
    model.provider = "CUDAExecutionProvider"
    run = run_model(volume, model, batch_size=4, use_focus=True)
    assert set(shapes) == {(4, 1, 256, 256)}  # short batches padded, no box
    assert {box for _, _, box in run.focus.blocks(8)} == {(0, 256, 0, 256)}
    assert 0 < run.focus.slices < 40  # the focus still skipped slices
