"""The calibration of run settings scores every variant against the reference with litseg-eval."""

from __future__ import annotations

import json
from pathlib import Path

from litseg.runtime import RunConfig, segment
from litseg.runtime.nifti import write_nifti
from litseg.train.evaluate import calibrate as calibrate_postprocess
from tests.factories import make_series, write_series


def test_every_variant_is_scored_and_the_filter_reaches_the_scores(tmp_path: Path, tumor_model: Path) -> None:
    phantoms = tmp_path / "phantoms"
    for n in (0, 1):
        write_series(make_series(), phantoms / "dicom" / f"case-{n}")
        # the reference: what the model itself gives (so the unfiltered variant must score 1)
        reference = segment(phantoms / "dicom" / f"case-{n}", RunConfig(model=tumor_model, min_tumor_ml=0.0))
        write_nifti(reference.labels, phantoms / f"segmentation-{n}.nii.gz")
    out = tmp_path / "calibration"
    argv = [str(tumor_model), str(phantoms), "--out", str(out), "--margin-mm", "0", "--min-tumor-ml", "0"]
    assert calibrate_postprocess.main([*argv, "--min-tumor-ml", "100"]) == 0
    scores = json.loads((out / "calibration.json").read_text())
    assert set(scores) == {f"tta{t}-min{m}-margin0" for t in (0, 1) for m in (0, 100)}
    assert scores["tta0-min0-margin0"]["tumor_dice_per_case"] == 1.0
    assert scores["tta0-min0-margin0"]["lesion_recall"] == 1.0
    assert scores["tta0-min100-margin0"]["lesion_recall"] == 0.0  # every tumor filtered out
