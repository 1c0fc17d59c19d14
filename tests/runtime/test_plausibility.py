"""Plausibility warnings on phantoms of every body region, on reoriented series of the same anatomy, and on
two real CTs: the abdominal 3-slice CT of ../shared/data with its reference liver, and a real head CT."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from litseg.runtime.geometry import Reorientation
from litseg.runtime.plausibility import assess
from litseg.runtime.series import read_series
from litseg.runtime.volume import Volume
from litseg.train.data.nrrd import read_nrrd
from litseg.train.phantom.case import PhantomCase, PhantomOptions, generate_case
from tests.head_ct import head_ct

# 3 mm slices keep whole regions at a few dozen slices; 160 x 160 keeps each case under a second or two
FAST = PhantomOptions(rows=160, slice_thickness_mm=3.0, hard_negatives=True)


@pytest.fixture(scope="module")
def cases() -> dict[str, PhantomCase]:
    return {
        region: generate_case(31, replace(FAST, region=region))
        for region in ("abdomen", "chest-abdomen-pelvis", "chest", "pelvis", "head", "neck")
    }


def _fake_liver(case: PhantomCase) -> Volume:
    """What a fooled model draws: a 1.5 L block on the patient's right half, in the scan's middle third."""
    hu = case.hu
    nz, ny, _ = hu.shape_zyx
    labels = np.zeros(hu.shape_zyx, np.uint8)
    k0, k1 = nz // 3, 2 * nz // 3
    depth_mm = (k1 - k0) * hu.spacing_mm[2]
    half = round(float(np.sqrt(1.5e6 / depth_mm)) / hu.spacing_mm[0] / 2)
    centre_j = ny // 2
    right_i = round(float(hu.lps_to_index([-60.0, 0.0, 0.0])[0]))  # LPS x = -60 mm: the patient's right
    labels[k0:k1, centre_j - half : centre_j + half, max(right_i - half, 0) : right_i + half] = 1
    return hu.with_array(labels)


def test_a_normal_phantom_liver_is_plausible(cases: dict[str, PhantomCase]) -> None:
    for region in ("abdomen", "chest-abdomen-pelvis"):
        case = cases[region]
        result = assess(case.labels, case.hu)
        assert result.liver_plausible, (region, result.warnings)
        assert result.warnings == ()
        assert result.checks["liver_volume_ml"] == pytest.approx(case.info["liver_volume_ml"], rel=0.01)
        assert float(result.checks["liver_offset_left_mm"]) < -30  # type: ignore[arg-type]
        report = json.loads(json.dumps(result.report()))  # the JSON report's section, as written
        assert report["liver_plausible"] is True and report["warnings"] == []


@pytest.mark.parametrize(
    ("region", "codes"),
    [
        ("head", {"not_abdominal"}),
        ("neck", {"not_abdominal"}),
        ("chest", {"liver_not_upper_abdomen", "not_abdominal"}),
        ("pelvis", {"liver_not_upper_abdomen"}),
    ],
)
def test_a_liver_outside_the_abdomen_is_flagged(cases: dict[str, PhantomCase], region: str, codes: set[str]) -> None:
    case = cases[region]
    assert not case.labels.array.any()  # liver-free regions are labelled background
    result = assess(_fake_liver(case), case.hu)
    assert not result.liver_plausible
    assert codes <= set(result.codes), result.warnings
    assert "no_liver" not in result.codes
    if region in ("head", "neck"):
        assert result.checks["slice_types"]["abdomen"] == 0  # type: ignore[index]


def test_no_liver_on_an_abdomen_is_the_only_warning(cases: dict[str, PhantomCase]) -> None:
    case = cases["abdomen"]
    result = assess(case.labels.with_array(np.zeros(case.hu.shape_zyx, np.uint8)), case.hu)
    assert result.codes == ("no_liver",)
    assert result.checks["liver_volume_ml"] == 0.0


def test_huge_and_tiny_livers_are_flagged(cases: dict[str, PhantomCase]) -> None:
    case = cases["abdomen"]
    labels = np.asarray(case.labels.array)
    tiny = np.zeros_like(labels)
    k = int(np.argmax((labels > 0).sum(axis=(1, 2))))
    tiny[k - 2 : k + 3][labels[k - 2 : k + 3] > 0] = 1  # five slices of the same liver
    result = assess(case.labels.with_array(tiny), case.hu)
    assert "liver_volume_out_of_range" in result.codes
    assert "liver_not_right" not in result.codes
    # the liver grown to a block filling most of the abdomen below it (what a pelvic mass adds)
    huge = labels.copy()
    body = np.asarray(case.hu.array) > -300
    huge[: k + 1][body[: k + 1]] = 1
    result = assess(case.labels.with_array(huge), case.hu)
    message = dict((w.code, w.message) for w in result.warnings)["liver_volume_out_of_range"]
    assert "outside 600-3500 mL" in message


def test_a_mirrored_liver_is_flagged(cases: dict[str, PhantomCase]) -> None:
    """The same anatomy with its pixels mirrored left-right but the true affine: a liver on the left."""
    case = cases["abdomen"]
    mirrored_hu = case.hu.with_array(np.ascontiguousarray(np.asarray(case.hu.array)[:, :, ::-1]))
    mirrored = case.labels.with_array(np.ascontiguousarray(np.asarray(case.labels.array)[:, :, ::-1]))
    result = assess(mirrored, mirrored_hu)
    assert "liver_not_right" in result.codes
    assert float(result.checks["liver_offset_left_mm"]) > 30  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "reo",
    [
        Reorientation(flip_x=True),
        Reorientation(flip_y=True, flip_x=True),
        Reorientation(flip_z=True),
        Reorientation(transpose=True),
        Reorientation(transpose=True, flip_z=True, flip_y=True),
    ],
    ids=["flip-x", "flip-xy", "flip-z", "transpose", "transpose-flip-zy"],
)
@pytest.mark.parametrize("region", ["abdomen", "head"])
def test_the_verdict_does_not_depend_on_the_array_order(
    cases: dict[str, PhantomCase], reo: Reorientation, region: str
) -> None:
    """Geometry is sacred: the same world stored in another array order gets the same verdict."""
    case = cases[region]
    labels = case.labels if region == "abdomen" else _fake_liver(case)
    reference = assess(labels, case.hu)
    result = assess(reo.apply(labels), reo.apply(case.hu))
    assert result.codes == reference.codes
    for key in ("liver_volume_ml", "liver_offset_left_mm"):
        assert float(result.checks[key]) == pytest.approx(float(reference.checks[key]), abs=3.0)  # type: ignore[arg-type]
    np.testing.assert_allclose(
        result.checks["liver_centroid_lps_mm"], reference.checks["liver_centroid_lps_mm"], atol=2.0
    )  # type: ignore[arg-type]


def test_the_verdict_survives_a_slice_axis_stored_first(cases: dict[str, PhantomCase]) -> None:
    """An array whose slice axis is not the first numpy axis (a reformat stored as (x, y, z)) with its affine."""
    case = cases["abdomen"]
    reference = assess(case.labels, case.hu)

    def swap(volume: Volume) -> Volume:
        affine = volume.affine_lps[:, [2, 1, 0, 3]]  # array axes (k, j, i) -> (i, j, k)
        return Volume(np.ascontiguousarray(np.asarray(volume.array).transpose(2, 1, 0)), affine)

    result = assess(swap(case.labels), swap(case.hu))
    assert result.codes == reference.codes
    assert float(result.checks["liver_offset_left_mm"]) == pytest.approx(
        float(reference.checks["liver_offset_left_mm"]), abs=3.0
    )  # type: ignore[arg-type]


def test_volumes_on_different_grids_are_refused(cases: dict[str, PhantomCase]) -> None:
    case = cases["abdomen"]
    shifted = case.hu.affine_lps.copy()
    shifted[0, 3] += 5.0
    with pytest.raises(ValueError, match="share one grid"):
        assess(case.labels, Volume(np.asarray(case.hu.array), shifted))


def test_real_abdominal_ct_liver_is_on_the_right(real_ct) -> None:  # type: ignore[no-untyped-def]
    """The real 3-slice CT with its manual liver: position and series pass; 3 slices cut the liver (70 mL)."""
    hu = read_series(real_ct / "dicom").volume
    reference = read_nrrd(real_ct / "liver_seg.nrrd")
    result = assess(Volume(np.asarray(reference.array), hu.affine_lps), hu)
    assert result.codes == ("liver_volume_out_of_range",)
    assert "cuts the liver" in result.warnings[0].message
    assert result.checks["liver_truncated"] is True
    assert float(result.checks["liver_offset_left_mm"]) < -30  # type: ignore[arg-type]
    assert result.checks["slice_types"] == {"head": 0, "small": 0, "chest": 0, "abdomen": 3}
    assert float(result.checks["median_body_area_cm2"]) > 500  # type: ignore[arg-type]


def test_real_head_ct_is_not_abdominal() -> None:
    """A real head CT (invesalius-examples): with a liver-like label in the brain, it is not abdominal."""
    head = head_ct()
    assert head.shape_zyx == (108, 256, 256)
    fake = np.zeros(head.shape_zyx, np.uint8)
    fake[40:90, 80:170, 60:128] = 1  # the patient's right half of the brain
    result = assess(head.with_array(fake), head)
    assert "not_abdominal" in result.codes
    types = result.checks["slice_types"]
    assert types["abdomen"] == 0 and types["head"] > 30  # type: ignore[index]
    assert float(result.checks["median_body_area_cm2"]) < 250  # type: ignore[arg-type]
    assert assess(head.with_array(np.zeros_like(fake)), head).codes == ("no_liver", "not_abdominal")


def test_numbers_in_warnings_never_contradict_their_threshold() -> None:
    from litseg.runtime.plausibility import shown, side_message

    assert shown(9.8, 10.0) == "9.8" and shown(9.96, 10.0) == "9.96" and shown(12.4, 10.0) == "12"
    assert shown(599.6, 600.0) == "599.6" and shown(3500.4, 3500.0) == "3500.4" and shown(250.4, 600.0) == "250"
    assert shown(50.04, 50.0) == "50.04" and shown(10.0, 10.0) == "10"
    message = side_message(-9.8)  # the liver's centre 9.8 mm right of the midline; 10 mm expected
    assert "only 9.8 mm right of" in message and "only 10 mm" not in message
    assert "0.3 mm to the patient's left" in side_message(0.3)
