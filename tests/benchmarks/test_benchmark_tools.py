"""The measuring instruments of issue 15: the naive-script baseline, the child-process meter, the report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from benchmarks import naive_pipeline, report
from benchmarks.child_process import run_measured
from tests.factories import SeriesGeometry, make_intensity_model, make_series, phantom_labels, write_series

MB = 1_000_000


def test_naive_script_segments_a_series_and_writes_nifti_in_ras(tmp_path: Path) -> None:
    geometry = SeriesGeometry(rows=64, columns=64, slices=12, pixel_spacing_mm=(4.0, 4.0), slice_spacing_mm=5.0)
    write_series(make_series(geometry), tmp_path / "series")  # shuffled files, InstanceNumber reversed
    model = make_intensity_model(tmp_path / "model.onnx")  # spec 256x256: a real resize each way
    timings = naive_pipeline.run(tmp_path / "series", model, tmp_path / "out")
    assert set(timings) == {"load_model", "read", "preprocess", "inference", "postprocess", "write_nifti"}
    image = nib.load(tmp_path / "out" / "labels.nii.gz")
    labels = np.asarray(image.dataobj).transpose(2, 1, 0)  # (x, y, z) -> (z, y, x)
    truth = phantom_labels(geometry.world_grid())
    for label in (1, 2):
        a, b = labels == label, truth == label
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.8, f"label {label}"
    expected = np.diag([-1.0, -1.0, 1.0, 1.0]) @ geometry.affine_lps()  # LPS -> RAS
    np.testing.assert_allclose(image.affine, expected, atol=1e-4)


def test_naive_script_command_line_prints_its_timings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_series(make_series(SeriesGeometry(slices=4)), tmp_path / "series")
    model = make_intensity_model(tmp_path / "model.onnx")
    assert naive_pipeline.main([str(tmp_path / "series"), "--model", str(model), "--out", str(tmp_path / "o")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["wall_s"] >= sum(printed["timings_s"].values()) * 0.99


def test_child_meter_sees_the_peak_of_the_child_and_of_its_children() -> None:
    code = (
        "import subprocess, sys\n"
        "big = bytearray(120_000_000)\n"  # the child: 120 MB
        "subprocess.run([sys.executable, '-c', 'import time; b = bytearray(200_000_000); time.sleep(0.6)'])\n"
        "print('done')\n"
    )
    run = run_measured([sys.executable, "-c", code], interval_s=0.05)
    assert run.returncode == 0 and run.stdout.strip() == "done"
    assert run.peak_rss_bytes >= 200 * MB  # ru_maxrss: the largest of the child and what it waited for
    assert run.tree_peak_rss_bytes >= 320 * MB  # sampled: both alive at once
    assert run.wall_s >= 0.6


def test_child_meter_kills_a_child_past_its_timeout() -> None:
    run = run_measured([sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=0.5)
    assert run.returncode < 0 and run.wall_s < 10


def _bench(group: str, name: str, seconds: float, **extra: object) -> dict[str, object]:
    return {"group": group, "name": name, "stats": {"min": seconds}, "extra_info": extra}


def _e2e(variant: str, wall: float, inference: float, rss: int) -> dict[str, object]:
    info = {"variant": variant, "slices": 432, "wall_s": wall, "peak_rss_bytes": rss, "tree_peak_rss_bytes": 0}
    info.update(rss_budget_bytes=1000 * MB, timings_s={"read": 1.0, "model_inference": inference})
    return _bench("end-to-end 512x512x432", f"test_{variant}", wall, **info)


def test_report_computes_each_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = {
        "machine_info": {"litseg": {"cpu_model": "Test CPU", "cpus_usable": 2, "onnxruntime_providers": ["CPU"]}},
        "benchmarks": [
            _e2e("litseg", 6.0, 5.5, 900 * MB),
            _e2e("litseg --no-tta", 4.0, 3.0, 1100 * MB),
            _e2e("naive", 12.0, 9.0, 2000 * MB),
            _bench(report.PREPROCESS_GROUP, "test_bench_preprocess_full", 0.010),
            _bench(report.PREPROCESS_GROUP, "test_bench_preprocess_scipy_zoom_baseline", 0.300),
            _bench(report.PREPROCESS_GROUP, "test_bench_preprocess_opencv_area_baseline", 0.011),
            _bench(report.PREPROCESS_GROUP, "test_bench_preprocess_memcopy_baseline", 0.008),
            _bench("read 64x512x512 JPEG-LS series", "test_bench_read_jpegls_series", 0.100),
            _bench("read 64x512x512 JPEG-LS series", "test_bench_read_jpegls_bare_pydicom_baseline", 0.250),
        ],
    }
    text, targets = report.render(data, "x.json")
    by_name = {t.name: t for t in targets}
    ratio = by_name["512x512x432 litseg: wall / naive script"]
    assert ratio.ratio == pytest.approx(0.5) and ratio.met
    outside = by_name["512x512x432 litseg --no-tta: wall outside inference / inference"]
    assert outside.ratio == pytest.approx(1 / 3) and not outside.met
    assert by_name["512x512x432 litseg: peak RSS / (3x int16 + model)"].met
    assert not by_name["512x512x432 litseg --no-tta: peak RSS / (3x int16 + model)"].met
    assert (
        by_name["preprocess: scipy.ndimage.zoom / numba"].ratio == pytest.approx(30)
        and not by_name["preprocess: OpenCV INTER_AREA / numba"].met
    )
    assert by_name["preprocess: numba / memory copy"].ratio == pytest.approx(1.25)
    jpegls = by_name["read 64 slices, JPEG-LS: bare pydicom / litseg"]
    assert jpegls.ratio == pytest.approx(2.5) and jpegls.met
    assert "Test CPU, 2 usable cores" in text and "| 512x512x432 | naive | 12.00 |" in text
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    assert report.main([str(path)]) == 0
    assert report.main([str(path), "--strict"]) == 1
    assert report.main([str(tmp_path / "missing.json")]) == 3
    assert "cannot read" in capsys.readouterr().err
