from __future__ import annotations

import os
from pathlib import Path

import pytest

from litseg.runtime.spec import PreprocessSpec
from tests.factories import make_intensity_model

#: Real CT data lives beside the repository (never inside it): ../shared/data.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_CT = SHARED_DATA / "dcmqi-ct-3slice"
#: CI sets this so that tests on the real data fail instead of skipping when the data is missing.
REQUIRE_SHARED_DATA = os.environ.get("LITSEG_REQUIRE_SHARED_DATA", "") == "1"


def shared_data(subfolder: str) -> Path:
    """``../shared/data/<subfolder>``; skips the calling test (with a reason naming the folder) when it is
    absent, or fails it when ``LITSEG_REQUIRE_SHARED_DATA=1`` (CI)."""
    path = SHARED_DATA / subfolder
    if not path.is_dir():
        message = (
            f"real test data missing: {path} (the repository expects ../shared/data beside it; it is never "
            "copied into the repository)"
        )
        if REQUIRE_SHARED_DATA:
            pytest.fail(message + "; LITSEG_REQUIRE_SHARED_DATA=1 requires it")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def tumor_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ONNX liver-tumor model (intensity-based) with litseg metadata, target 64x64."""
    spec = PreprocessSpec(target_shape_yx=(64, 64))
    return make_intensity_model(tmp_path_factory.mktemp("models") / "tumor.onnx", spec)


@pytest.fixture(scope="session")
def real_ct() -> Path:
    """The real 3-slice GE CT with a manual liver (../shared/data/dcmqi-ct-3slice)."""
    path = shared_data("dcmqi-ct-3slice")
    if not (path / "dicom").is_dir():
        pytest.fail(f"{path} lacks its dicom/ folder")
    return path
