from __future__ import annotations

from pathlib import Path

import pytest

from litseg.runtime.spec import PreprocessSpec
from tests.factories import make_intensity_model

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_CT = SHARED_DATA / "dcmqi-ct-3slice"


@pytest.fixture(scope="session")
def tumor_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ONNX liver-tumor model (intensity-based) with litseg metadata, target 64x64."""
    spec = PreprocessSpec(target_shape_yx=(64, 64))
    return make_intensity_model(tmp_path_factory.mktemp("models") / "tumor.onnx", spec)


@pytest.fixture(scope="session")
def real_ct() -> Path:
    if not (REAL_CT / "dicom").is_dir():
        pytest.fail(f"shared test data missing at {REAL_CT}; the repository expects ../shared/data beside it")
    return REAL_CT
