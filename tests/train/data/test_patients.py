"""Patient matching across the real slice collections and the clean MSD split.

Synthetic known pairs first (a slice against an exported copy of itself and of its neighbour: transformed,
resampled, re-windowed; a different patient), then the CASE-order rule and the split rule, then the real
collections (../shared/data): the matches and the recorded constants are what the data gives.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from litseg.runtime.geometry import Reorientation
from litseg.train.data import patient_match as pm
from litseg.train.data import patients as pt
from litseg.train.data.case_order import case_by_order, lits_volume, place_by_order
from litseg.train.data.lits_tumor import SELECTION_VOLUMES, TEST_VOLUMES, load_lits_tumor
from litseg.train.data.orientation import DIHEDRAL
from litseg.train.data.real_slices import MSD_VALIDATION_CASES, load_ircad
from tests.conftest import shared_data

FloatArray = npt.NDArray[np.float32]


# --- Synthetic anatomy ------------------------------------------------------------------------------------


def _ellipse(shape: int, cy: float, cx: float, ry: float, rx: float) -> npt.NDArray[np.bool_]:
    y, x = np.mgrid[:shape, :shape].astype(np.float32)
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def anatomy(seed: int, level: float = 0.0, size: int = 512) -> FloatArray:
    """An abdominal slice in HU: body, fat, muscle wall, liver, spleen, kidneys, aorta, spine, bowel.

    ``seed`` is the patient (body build, organ sizes and places); ``level`` moves through the body: organ
    radii change by a few percent per unit, as between neighbouring CT slices.
    """
    rng = np.random.default_rng(seed)
    s = size / 512
    hu = np.full((size, size), -1000.0, dtype=np.float32)
    body_ry, body_rx = rng.uniform(130, 190) * s, rng.uniform(180, 240) * s
    cy, cx = size / 2 + rng.uniform(-20, 20) * s, size / 2 + rng.uniform(-20, 20) * s
    hu[_ellipse(size, cy, cx, body_ry, body_rx)] = -100.0  # subcutaneous fat
    wall = rng.uniform(12, 30) * s
    hu[_ellipse(size, cy, cx, body_ry - wall, body_rx - wall)] = 40.0  # muscle wall
    hu[_ellipse(size, cy, cx, body_ry - wall - 8 * s, body_rx - wall - 8 * s)] = -90.0  # visceral fat

    def organ(dy: float, dx: float, ry: float, rx: float, value: float, grow: float) -> None:
        k = 1.0 + grow * level
        hu[_ellipse(size, cy + dy * body_ry, cx + dx * body_rx, ry * body_ry * k, rx * body_rx * k)] = value

    organ(-0.1, -0.45 + rng.uniform(-0.1, 0.1), rng.uniform(0.35, 0.55), rng.uniform(0.25, 0.4), 60.0, -0.05)
    organ(0.1, 0.5 + rng.uniform(-0.1, 0.1), rng.uniform(0.15, 0.3), rng.uniform(0.1, 0.2), 50.0, 0.08)
    for side in (-1, 1):  # kidneys
        organ(0.45, side * rng.uniform(0.25, 0.4), rng.uniform(0.12, 0.2), rng.uniform(0.08, 0.14), 150.0, 0.1)
    organ(0.25, rng.uniform(-0.08, 0.08), 0.07, 0.05, 200.0, 0.0)  # aorta
    organ(0.62, 0.0, rng.uniform(0.12, 0.18), rng.uniform(0.1, 0.14), 700.0, 0.02)  # vertebra
    for _ in range(6):  # bowel loops: gas and contents
        organ(rng.uniform(-0.6, 0.2), rng.uniform(-0.1, 0.5), 0.06, 0.06, rng.choice([-900.0, 20.0]), 0.3)
    noise = np.random.default_rng(seed * 1000 + int(level * 100)).normal(0, 12, hu.shape).astype(np.float32)
    return hu + noise


def area_resize(hu: FloatArray, factor: int) -> FloatArray:
    n = hu.shape[0] // factor
    return hu.reshape(n, factor, n, factor).mean(axis=(1, 3)).astype(np.float32)


def msd_like(hu: FloatArray) -> FloatArray:
    """MSD's export: HU saturated to 0..255, 256 px, transposed and mirrored."""
    t = Reorientation(transpose=True, flip_x=True)
    return np.asarray(t.apply_array(area_resize(np.clip(hu, 0, 255), 2)[None])[0], dtype=np.float32)


def ircad_like(hu: FloatArray) -> FloatArray:
    """IRCAD's: min-max normalised and mapped back with an estimate ~10 % and ~15 HU off, rotated 90 degrees."""
    t = Reorientation(transpose=True, flip_y=True)
    return np.asarray(t.apply_array((hu * 1.1 + 15.0)[None])[0], dtype=np.float32)


def lits_like(hu: FloatArray) -> FloatArray:
    """lits-tumor's: what the two windows keep (below -45 HU one value, above 160 HU a lower bound)."""
    return np.where(hu < -45.0, -100.0, np.minimum(hu, 160.0)).astype(np.float32)


def _signatures(patient_slices: list[tuple[str, int, FloatArray]]) -> pm.Signatures:
    return pm.Signatures(
        tuple(p for p, _, _ in patient_slices),
        tuple(i for _, i, _ in patient_slices),
        np.stack([pm.signature(hu) for _, _, hu in patient_slices]),
    )


# --- The matcher on known pairs ---------------------------------------------------------------------------


@pytest.mark.parametrize("export", [msd_like, ircad_like, lits_like])
def test_same_slice_and_neighbour_match_through_an_export_and_a_stranger_does_not(
    export: Callable[[FloatArray], FloatArray],
) -> None:
    reference = _signatures([("ref-1", 0, anatomy(1)), ("ref-2", 0, anatomy(2)), ("ref-3", 0, anatomy(3))])
    exported = _signatures(
        [("same", 0, export(anatomy(1))), ("neighbour", 2, export(anatomy(2, level=1.0)))]
        + [("stranger", 0, export(anatomy(seed))) for seed in (4, 5, 6)]
    )
    table = pm.score(exported, reference)
    r = {(a, b): table.r[i, j] for i, a in enumerate(table.patients_a) for j, b in enumerate(table.patients_b)}
    assert r[("same", "ref-1")] > 0.95
    assert r[("neighbour", "ref-2")] >= pm.MATCH_R
    assert r[("stranger", "ref-1")] < pm.MATCH_R and r[("stranger", "ref-2")] < pm.MATCH_R
    assert r[("stranger", "ref-3")] < pm.MATCH_R
    found = {(m.patient_a, m.patient_b) for m in table.matches()}
    assert found == {("same", "ref-1"), ("neighbour", "ref-2")}
    margin = pm.separation(table).margin
    assert margin is not None and margin > 0


@pytest.mark.parametrize("transform", DIHEDRAL)
def test_any_of_the_8_transforms_is_undone_and_reported(transform: Reorientation) -> None:
    hu = area_resize(anatomy(7), 2)
    turned = np.asarray(transform.apply_array(hu[None])[0])
    table = pm.score(_signatures([("a", 3, hu)]), _signatures([("b", 9, turned)]))
    best = table.best[("a", "b")]
    assert best.r > 0.999 and (best.slice_a, best.slice_b) == (3, 9)
    # The reported transform turns b's slice back onto a's.
    np.testing.assert_allclose(best.transform.apply_array(turned[None])[0], hu)


def test_best_pair_is_taken_over_all_slices_of_both_patients() -> None:
    a = _signatures([("a", 10, anatomy(11)), ("a", 20, anatomy(12)), ("x", 0, anatomy(13))])
    b = _signatures([("b", 5, anatomy(14)), ("b", 6, msd_like(anatomy(12))), ("y", 1, anatomy(15))])
    table = pm.score(a, b)
    assert table.patients_a == ("a", "x") and table.patients_b == ("b", "y")
    best = table.best[("a", "b")]
    assert (best.slice_a, best.slice_b) == (20, 6) and best.r == pytest.approx(table.r[0, 0])
    assert table.ranked("a")[0][0] == "b" and table.ranked("b", along="b")[0][0] == "a"


def test_slices_of_a_patient_must_be_contiguous_and_a_flat_slice_matches_nothing() -> None:
    scattered = _signatures([("a", 0, anatomy(1)), ("b", 0, anatomy(2)), ("a", 1, anatomy(3))])
    with pytest.raises(ValueError, match="not contiguous"):
        pm.score(scattered, scattered)
    flat = pm.signature(np.full((256, 256), -1000.0, dtype=np.float32))
    assert not flat.any()
    with pytest.raises(ValueError, match="2-D"):
        pm.signature(np.zeros((2, 4, 4), dtype=np.float32))


def test_a_non_square_slice_is_padded_like_the_exports() -> None:
    hu = anatomy(21)
    cropped = hu[40:-40]  # 432 x 512: the export padded it back to a square before resizing
    assert float(np.sum(pm.signature(cropped) * pm.signature(hu))) > 0.95


# --- The CASE order ---------------------------------------------------------------------------------------


def test_lits_volume_of_patient_ids() -> None:
    assert lits_volume("lits-48") == 48 and lits_volume("ircad-10001") == 28 and lits_volume("ircad-10020") == 47
    for bad in ("ircad-10021", "msd-10001", "lits-x"):
        with pytest.raises(ValueError, match="got"):
            lits_volume(bad)


def test_case_by_order_counts_volumes_between_anchors_and_refuses_gaps() -> None:
    # String order: ..., 23, 24, 25, 26, 27, 28, 29, 3, 30, ... : 23 and 3 are 7 positions apart.
    anchors = {23: 10044, 3: 10051}
    assert case_by_order(28, anchors) == 10049 and case_by_order(24, anchors) == 10045
    assert case_by_order(3, anchors) == 10051
    assert case_by_order(30, anchors) is None  # no anchor after it
    assert case_by_order(28, {23: 10044, 3: 10050}) is None  # one volume between was skipped: ambiguous
    with pytest.raises(ValueError, match="file-name order"):
        case_by_order(28, {23: 10051, 3: 10044})
    placed = place_by_order(["lits-23", "lits-25", "ircad-10001"], {"lits-23": 10044, "lits-3": 10051})
    assert placed == {"lits-25": 10046, "ircad-10001": 10049}


def test_recorded_order_matches_follow_from_the_recorded_content_matches() -> None:
    unmatched = set(pt.MATCHES_BY_ORDER) | {"lits-99"}  # lits-99 lies beyond the last anchor: not placed
    assert place_by_order(unmatched, pt.MATCHES_BY_CONTENT) == pt.MATCHES_BY_ORDER


# --- The split --------------------------------------------------------------------------------------------

MSD_CASES = tuple(c for c in range(10001, 10124) if c != 10029)  # the 122 patients of msd-liver-slices


def test_recorded_split_is_the_rule_applied_to_the_recorded_matches() -> None:
    split = pt.clean_msd_split(MSD_CASES, pt.MATCHES_BY_CONTENT | pt.MATCHES_BY_ORDER)
    assert split == pt.recorded_split(MSD_CASES)
    assert all(split.role(c) == pt.msd_role(c) for c in MSD_CASES)


def test_split_rule_puts_each_matched_patient_in_its_place() -> None:
    matches = pt.MATCHES_BY_CONTENT | pt.MATCHES_BY_ORDER
    split = pt.clean_msd_split(MSD_CASES, matches)
    groups = [set(split.excluded), set(split.selection), set(split.report), set(split.train)]
    assert sum(len(g) for g in groups) == len(MSD_CASES) and set().union(*groups) == set(MSD_CASES)
    assert len(split.report) == pt.MSD_REPORT_SIZE and len(split.selection) == pt.MSD_SELECTION_SIZE
    for patient, case in matches.items():
        volume = lits_volume(patient)
        if patient.startswith("ircad-") or volume in TEST_VOLUMES:
            assert split.role(case) == "excluded", patient
        elif volume in SELECTION_VOLUMES:
            assert split.role(case) == "selection", patient
        else:
            assert split.role(case) == "train", patient
    # Report patients were never matched and never trained on by 0.6.0 (its validation set).
    assert not set(split.report) & set(matches.values())
    assert set(split.report) <= set(MSD_VALIDATION_CASES)


def test_split_is_fixed_and_refuses_unknown_cases() -> None:
    matches = {"lits-5": 10073, "lits-9": 10115, "lits-0": 10001, "ircad-10009": 10058}
    first = pt.clean_msd_split(MSD_CASES, matches)
    assert pt.clean_msd_split(reversed(MSD_CASES), matches) == first
    assert first.role(10073) == "excluded" and first.role(10058) == "excluded"
    assert first.role(10115) == "selection" and first.role(10001) == "train"
    with pytest.raises(ValueError, match="not among"):
        pt.clean_msd_split(MSD_CASES, {"lits-5": 99999})
    with pytest.raises(KeyError):
        first.role(99999)


# --- The real collections ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signatures() -> dict[str, pm.Signatures]:
    for folder in ("msd-liver-slices", "ircad-liver-slices", "lits-tumor-slices"):
        data = shared_data(folder).parent
    return pt.load_signatures(data)


@pytest.fixture(scope="module")
def finding(signatures: dict[str, pm.Signatures]) -> pt.Finding:
    return pt.find(signatures)


def test_real_matches_separate_with_a_margin(finding: pt.Finding) -> None:
    scores = finding.distribution()
    for name in ("ircad-msd", "lits-msd"):
        separation = pm.separation(finding.tables[name])
        assert separation.margin is not None and separation.margin > 0.15, (name, separation)
        # Strangers (not the same person by content or by order) stay far below every content match.
        assert scores[name]["by_content"][0] - scores[name]["strangers"][1] > 0.25, (name, scores[name])
        assert "flagged" not in scores[name]
    # Every lits-tumor volume with liver is found; IRCAD patients at the same level (the review found 5).
    assert {p for p in finding.by_content if p.startswith("lits-")} == {
        p for p in finding.tables["lits-msd"].patients_a if p != "lits-25"
    }
    assert sum(p.startswith("ircad-") for p in finding.by_content) >= 5
    # One MSD patient per lits-tumor volume and per IRCAD patient, never shared.
    assert len(set(finding.by_content.values())) == len(finding.by_content)
    # Different MSD patients never reach the threshold against each other.
    assert not [m for m in finding.tables["msd-msd"].matches() if m.patient_a != m.patient_b]


def _jpeg_msd_export(hu: FloatArray, transform: Reorientation) -> FloatArray:
    """A real slice exported as the MSD generator did: HU saturated to 0..255, 256 px, turned, 8-bit JPEG."""
    grey = np.clip(hu, 0, 255).astype(np.float32)
    small = Image.fromarray(grey, mode="F").resize((256, 256), Image.Resampling.BILINEAR)
    turned = np.asarray(transform.apply_array(np.asarray(small)[None])[0])
    buffer = io.BytesIO()
    Image.fromarray(np.round(turned).astype(np.uint8)).save(buffer, format="JPEG", quality=75)
    return np.asarray(Image.open(buffer), dtype=np.float32)


def _without(signatures: pm.Signatures, patient: str, slice_id: int) -> pm.Signatures:
    pairs = zip(signatures.patients, signatures.slice_ids, strict=True)
    keep = [k for k, key in enumerate(pairs) if key != (patient, slice_id)]
    return pm.Signatures(
        tuple(signatures.patients[k] for k in keep),
        tuple(signatures.slice_ids[k] for k in keep),
        signatures.vectors[keep],
    )


def test_real_slices_exported_again_match_their_own_patient_only(signatures: dict[str, pm.Signatures]) -> None:
    # Real anatomy as known pairs: lits-tumor and IRCAD slices re-exported the MSD way are found in their own
    # patient and no other; a lits-tumor slice through its neighbour 2 slices away (itself left out).
    lits = [s for s in load_lits_tumor(shared_data("lits-tumor-slices"), {3, 48}, check=False) if s.liver.any()]
    ircad = load_ircad(shared_data("ircad-liver-slices"))
    turn = Reorientation(transpose=True, flip_y=True)
    for s in lits[:: max(1, len(lits) // 6)] + ircad[::6]:
        query = _signatures([("query", 0, _jpeg_msd_export(s.hu, turn))])
        own = signatures["ircad"] if s.source == "ircad" else _without(signatures["lits"], s.patient, s.slice_index)
        ranked = pm.score(query, own).ranked("query")
        assert ranked[0][0] == s.patient and ranked[0][1] >= pm.MATCH_R, (s.name, ranked[:2])
        assert ranked[1][1] < pm.MATCH_R, (s.name, ranked[:2])


def test_real_loaders_agree_on_the_orientation_of_each_matched_patient(finding: pt.Finding) -> None:
    # The best pair of every content match needs no turn: the MSD, IRCAD and lits-tumor loaders put the same
    # patient in the same canonical orientation, each from its own export's flips and transposes.
    for patient, case in finding.by_content.items():
        table = finding.tables["ircad-msd" if patient.startswith("ircad-") else "lits-msd"]
        assert table.best[(patient, f"msd-{case}")].transform == Reorientation(), patient


def test_real_order_rule_predicts_each_content_match_left_out(finding: pt.Finding) -> None:
    predicted = 0
    for patient, case in finding.by_content.items():
        others = {p: c for p, c in finding.by_content.items() if p != patient}
        placed = place_by_order([patient], others).get(patient)
        assert placed in (case, None), (patient, case, placed)  # never a wrong CASE
        predicted += placed == case
    # 16 of 23 today; the others sit at an end of the order or beside volumes the export skipped.
    assert predicted >= 2 * len(finding.by_content) // 3


def test_real_data_gives_the_recorded_constants(finding: pt.Finding) -> None:
    assert finding.by_content == pt.MATCHES_BY_CONTENT
    assert finding.by_order == pt.MATCHES_BY_ORDER
    assert finding.split == pt.recorded_split(finding.msd_cases)
    assert finding.agrees
    moved = dict(finding.by_order) | {"ircad-10001": 10057}
    assert not dataclasses.replace(finding, by_order=moved).agrees


def test_real_json_report_has_scores_and_the_split(finding: pt.Finding, tmp_path: Path) -> None:
    result = pt.to_json(finding)
    rows = {row["patient"]: row for row in result["matches"]}  # type: ignore[attr-defined]
    for patient, case in pt.MATCHES_BY_CONTENT.items():
        assert rows[patient]["msd_case"] == case and rows[patient]["r"] >= pm.MATCH_R
    assert rows["lits-25"]["how"] == "order"
    assert result["split"]["report"] == list(pt.MSD_REPORT)  # type: ignore[index]
    text = json.dumps(result)
    assert json.loads(text)["agrees_with_recorded"] is True


def test_cli_writes_the_matches_and_says_whether_the_constants_agree(
    signatures: dict[str, pm.Signatures],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(pt, "load_signatures", lambda data: signatures)  # read once, by the fixture
    out = tmp_path / "sub" / "matches.json"
    assert pt.main([str(tmp_path), "--json", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written["agrees_with_recorded"] is True and written["rule"]["match_r"] == pm.MATCH_R
    assert [p.name for p in out.parent.iterdir()] == ["matches.json"]  # no temporary file left
    stdout = capsys.readouterr().out
    assert "lits-48 = msd-10071" in stdout and "the recorded constants agree" in stdout


def test_cli_names_a_missing_collection(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert pt.main([str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert "msd-liver-slices" in err and "Traceback" not in err
