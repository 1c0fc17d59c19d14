"""Which real patient is where: the same LiTS patients across the slice collections, and the clean MSD split.

The three real collections are exports of overlapping LiTS17 volumes (``../shared/data/README.md``):
``msd-liver-slices`` (122 patients, CASE numbers ``10001..``), ``ircad-liver-slices`` (3D-IRCADb-01 =
LiTS volumes 28-47; a test set) and ``lits-tumor-slices`` (LiTS volumes by number, split by volume into
test, selection and training: :mod:`.lits_tumor`). Before a figure on IRCAD or on the lits-tumor test
volumes means anything, their patients must be kept out of what is trained on and what is chosen on.

**By content** (:mod:`.patient_match`): an MSD patient is an IRCAD patient or a lits-tumor volume when
their best slice pair reaches Pearson r >= :data:`.patient_match.MATCH_R` in the common representation.
That finds every lits-tumor volume with liver (r 0.89-0.99; strangers <= 0.44) but only the IRCAD
patients whose MSD slices lie at the same level of the body (5 of 16, r 0.76-0.92).

**By CASE order**, for the rest: the MSD generator numbered its volumes in the order of their file names,
and all content matches (LiTS volume -> CASE) follow the string order of the volume numbers
(``0, 1, 10, 100, ..., 28, 29, 3, 30, ...``); 3D-IRCADb-01 patient ``k`` (IRCAD CASE ``10000 + k``) is LiTS
volume ``27 + k``. Between two matched neighbours that are exactly as many CASE numbers apart as there
are volumes between them, every volume's CASE is known (:mod:`.case_order`; unknown where the
export skipped a volume there). Each content match left out in turn, the order predicts 16 of the 23 and
contradicts none (the other 7 lie at an end of the order or beside a skipped volume; a real-data test).

**The clean MSD split** (:func:`clean_msd_split`, recorded in the ``MSD_*`` constants, recomputed by
``python -m litseg.train.data.patients ../shared/data --json out.json``; a test checks they agree):

- ``excluded``: MSD patients who are IRCAD patients or lits-tumor *test* volumes. Never trained on,
  never used for a choice; they may be reported only as their own group;
- ``selection``: the MSD patients who are lits-tumor *selection* volumes, plus free patients up to
  :data:`MSD_SELECTION_SIZE`;
- ``report``: :data:`MSD_REPORT_SIZE` free patients, never used for any choice;
- ``train``: the rest, including every MSD patient who is a lits-tumor *training* volume (trained on
  there anyway, so never reported or selected on).

"Free" means placed as no lits-tumor volume and no IRCAD patient. Report patients are drawn first, from
the free patients of the old validation set (:data:`.real_slices.MSD_VALIDATION_CASES`: the only ones the
0.6.0 model was never trained on, so its baseline can be re-reported on them), in the order of
``numpy.random.default_rng(SPLIT_SEED).permutation``; selection takes the rest of that permutation, then
a permutation (same generator) of the other free patients.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from litseg.runtime.errors import LitsegError
from litseg.runtime.geometry import Reorientation

from . import patient_match as pm
from .case_order import lits_volume, place_by_order
from .lits_tumor import SELECTION_VOLUMES, TEST_VOLUMES, load_lits_tumor
from .lits_tumor import rows as lits_rows
from .real_slices import MSD_VALIDATION_CASES, load_ircad, load_msd

log = logging.getLogger(__name__)

MSD_REPORT_SIZE = 11
MSD_SELECTION_SIZE = 11
SPLIT_SEED = 22

#: Patient (lits-tumor volume or IRCAD patient) -> MSD CASE, found by content (r >= MATCH_R). lits-25 (a
#: pelvis without liver) and 11 IRCAD patients (slices at other levels) match none.
MATCHES_BY_CONTENT: dict[str, int] = {
    "lits-0": 10001, "lits-3": 10051, "lits-4": 10062, "lits-5": 10073, "lits-7": 10095, "lits-8": 10106,
    "lits-9": 10115, "lits-10": 10003, "lits-11": 10012, "lits-12": 10023, "lits-14": 10034,
    "lits-15": 10035, "lits-16": 10036, "lits-18": 10038, "lits-22": 10043, "lits-23": 10044,
    "lits-48": 10071, "lits-50": 10074,
    "ircad-10009": 10058, "ircad-10014": 10064, "ircad-10015": 10065, "ircad-10016": 10066,
    "ircad-10017": 10067,
}  # fmt: skip
#: The patients without a content match, placed by the CASE order.
MATCHES_BY_ORDER: dict[str, int] = {
    "lits-25": 10046,
    "ircad-10001": 10049, "ircad-10002": 10050, "ircad-10003": 10052, "ircad-10005": 10054,
    "ircad-10006": 10055, "ircad-10007": 10056, "ircad-10008": 10057, "ircad-10010": 10059,
    "ircad-10011": 10060, "ircad-10012": 10061, "ircad-10013": 10063,
}  # fmt: skip
#: The clean split of the 122 MSD patients (CASE numbers), :func:`clean_msd_split` of the matches above.
MSD_EXCLUDED: tuple[int, ...] = (
    10003, 10036, 10049, 10050, 10052, 10054, 10055, 10056, 10057, 10058, 10059, 10060, 10061, 10063,
    10064, 10065, 10066, 10067, 10071, 10073,
)  # fmt: skip
MSD_SELECTION: tuple[int, ...] = (
    10002, 10009, 10018, 10032, 10043, 10074, 10088, 10092, 10094, 10104, 10115,
)  # fmt: skip
MSD_REPORT: tuple[int, ...] = (
    10008, 10014, 10016, 10026, 10031, 10053, 10068, 10079, 10102, 10110, 10112,
)  # fmt: skip


@dataclass(frozen=True)
class MsdSplit:
    """MSD CASE numbers by role (sorted tuples); every MSD patient is in exactly one."""

    excluded: tuple[int, ...]
    selection: tuple[int, ...]
    report: tuple[int, ...]
    train: tuple[int, ...]

    def role(self, case: int) -> str:
        """``"excluded"``, ``"selection"``, ``"report"`` or ``"train"``."""
        for name in ("excluded", "selection", "report", "train"):
            if case in getattr(self, name):
                return name
        raise KeyError(f"MSD CASE {case} is not in the split")


def _role_of_match(patient: str) -> str:
    """What an MSD patient becomes when it is ``patient`` of another collection."""
    if patient.startswith("ircad-"):
        return "excluded"
    volume = lits_volume(patient)
    return "excluded" if volume in TEST_VOLUMES else "selection" if volume in SELECTION_VOLUMES else "train"


def clean_msd_split(cases: Iterable[int], matches: Mapping[str, int]) -> MsdSplit:
    """The clean split of the MSD ``cases`` given ``matches`` (patient -> MSD CASE, both kinds).

    An MSD patient matched twice takes the strictest role (excluded before selection before train).
    """
    all_cases = sorted(set(cases))
    unknown = set(matches.values()) - set(all_cases)
    if unknown:
        raise ValueError(f"matched MSD cases {sorted(unknown)} are not among the {len(all_cases)} MSD cases")
    roles = {name: {c for p, c in matches.items() if _role_of_match(p) == name} for name in ("excluded", "selection")}
    excluded = roles["excluded"]
    forced_selection = roles["selection"] - excluded
    free = [c for c in all_cases if c not in set(matches.values())]
    rng = np.random.default_rng(SPLIT_SEED)
    queue = [int(c) for c in rng.permutation([c for c in free if c in MSD_VALIDATION_CASES])]
    queue += [int(c) for c in rng.permutation([c for c in free if c not in MSD_VALIDATION_CASES])]
    report = set(queue[:MSD_REPORT_SIZE])
    fill = max(0, MSD_SELECTION_SIZE - len(forced_selection))
    selection = forced_selection | set(queue[MSD_REPORT_SIZE : MSD_REPORT_SIZE + fill])
    train = set(all_cases) - excluded - selection - report
    return MsdSplit(*(tuple(sorted(s)) for s in (excluded, selection, report, train)))


def recorded_split(cases: Iterable[int]) -> MsdSplit:
    """The recorded split: the ``MSD_*`` constants, every other of ``cases`` in training."""
    fixed = set(MSD_EXCLUDED) | set(MSD_SELECTION) | set(MSD_REPORT)
    train = tuple(sorted(set(cases) - fixed))
    return MsdSplit(MSD_EXCLUDED, MSD_SELECTION, MSD_REPORT, train)


def msd_role(case: int) -> str:
    """The recorded role of an MSD CASE: ``"excluded"``, ``"selection"``, ``"report"`` or ``"train"``."""
    if case in MSD_EXCLUDED:
        return "excluded"
    if case in MSD_SELECTION:
        return "selection"
    return "report" if case in MSD_REPORT else "train"


# --- Recomputing the matches from the data (the CLI) ------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """What the data says: the score tables, the matches of both kinds and the split they give."""

    tables: dict[str, pm.ScoreTable]  # "ircad-msd", "lits-msd", and the cross-checks
    by_content: dict[str, int]
    by_order: dict[str, int]
    split: MsdSplit
    msd_cases: tuple[int, ...]

    def distribution(self) -> dict[str, dict[str, list[float]]]:
        """Per table, the ``[lowest, highest]`` score of each kind of pair: ``by_content`` and ``by_order``
        (the same person, found either way), ``flagged`` (other pairs at or above MATCH_R: within a collection,
        the same person twice?), ``strangers`` (every other pair of different patients)."""
        same = {(p, f"msd-{c}"): "by_content" for p, c in self.by_content.items()}
        same |= {(p, f"msd-{c}"): "by_order" for p, c in self.by_order.items()}
        out: dict[str, dict[str, list[float]]] = {}
        for name, table in self.tables.items():
            kinds: dict[str, list[float]] = {}
            for i, a in enumerate(table.patients_a):
                for j, b in enumerate(table.patients_b):
                    r = float(table.r[i, j])
                    if a != b:
                        kind = same.get((a, b), "flagged" if r >= pm.MATCH_R else "strangers")
                        kinds.setdefault(kind, []).append(r)
            out[name] = {k: [round(min(v), 4), round(max(v), 4)] for k, v in sorted(kinds.items())}
        return out

    @property
    def agrees(self) -> bool:
        """Whether the recorded constants are what the data gives."""
        return (
            self.by_content == MATCHES_BY_CONTENT
            and self.by_order == MATCHES_BY_ORDER
            and self.split == recorded_split(self.msd_cases)
        )


def load_signatures(data: Path) -> dict[str, pm.Signatures]:
    """The signatures of the three collections under ``data`` (``../shared/data``), keyed by source.

    lits-tumor volumes are read one at a time, so that only signatures stay in memory.
    """
    log.info("reading msd-liver-slices and ircad-liver-slices")
    out = {
        "msd": pm.Signatures.of(load_msd(data / "msd-liver-slices")),
        "ircad": pm.Signatures.of(load_ircad(data / "ircad-liver-slices")),
    }
    folder = data / "lits-tumor-slices"
    volumes = sorted({r.volume for r in lits_rows(folder)})
    lits = pm.Signatures((), (), np.zeros((0, pm.GRID, pm.GRID), np.float32))
    for k, volume in enumerate(volumes):
        log.info("reading lits-tumor volume %d (%d of %d)", volume, k + 1, len(volumes))
        lits = lits + pm.Signatures.of(load_lits_tumor(folder, {volume}, check=k == 0))
    out["lits"] = lits
    return out


def content_matches(table: pm.ScoreTable) -> dict[str, int]:
    """Row patient -> MSD CASE of a table against MSD (columns ``msd-CASE``), r >= MATCH_R.

    Raises
    ------
    ValueError
        A patient matches two MSD patients, or an MSD patient two of the rows: the rule does not hold here.
    """
    found: dict[str, int] = {}
    for pair in table.matches():
        case = int(pair.patient_b.removeprefix("msd-"))
        if pair.patient_a in found or case in found.values():
            raise ValueError(
                f"ambiguous match: {pair.patient_a} - msd-{case} (r = {pair.r:.3f}) beside {found}; "
                f"the threshold r >= {pm.MATCH_R} does not separate patients in this data"
            )
        found[pair.patient_a] = case
    return found


def find(signatures: Mapping[str, pm.Signatures]) -> Finding:
    """Match the collections, place the rest by the CASE order, and split MSD."""
    msd, ircad, lits = signatures["msd"], signatures["ircad"], signatures["lits"]
    tables = {
        "ircad-msd": pm.score(ircad, msd),
        "lits-msd": pm.score(lits, msd),
        # Cross-checks: the same person twice within a collection, or in IRCAD and lits-tumor.
        "msd-msd": pm.score(msd, msd),
        "lits-lits": pm.score(lits, lits),
        "ircad-lits": pm.score(ircad, lits),
    }
    by_content = content_matches(tables["ircad-msd"]) | content_matches(tables["lits-msd"])
    patients = ircad.unique_patients() + lits.unique_patients()
    by_order = place_by_order(patients, by_content)
    cases = tuple(sorted(int(p.removeprefix("msd-")) for p in msd.unique_patients()))
    split = clean_msd_split(cases, by_content | by_order)
    return Finding(tables, by_content, by_order, split, cases)


def _cross_pairs(table: pm.ScoreTable) -> list[dict[str, object]]:
    """Pairs of different patients at or above MATCH_R (each pair once)."""
    pairs = [p for p in table.matches() if p.patient_a != p.patient_b]
    seen: set[frozenset[str]] = set()
    out: list[dict[str, object]] = []
    for p in pairs:
        if frozenset((p.patient_a, p.patient_b)) not in seen:
            seen.add(frozenset((p.patient_a, p.patient_b)))
            out.append({"a": p.patient_a, "b": p.patient_b, "r": round(p.r, 4), "slices": [p.slice_a, p.slice_b]})
    return out


def _describe(t: Reorientation) -> str:
    parts = [name for name, on in (("transpose", t.transpose), ("flip_y", t.flip_y), ("flip_x", t.flip_x)) if on]
    return "+".join(parts) or "identity"


def to_json(finding: Finding) -> dict[str, object]:
    """The finding as plain JSON: matches with scores, each patient's best candidates, the split."""
    rows: list[dict[str, object]] = []
    for name in ("ircad-msd", "lits-msd"):
        table = finding.tables[name]
        for patient in table.patients_a:
            ranked = table.ranked(patient)
            case = finding.by_content.get(patient, finding.by_order.get(patient))
            row: dict[str, object] = {"patient": patient, "msd_case": case}
            row["how"] = "content" if patient in finding.by_content else "order" if case is not None else None
            if case is not None:
                best = table.best[(patient, f"msd-{case}")]
                row |= {"r": round(best.r, 4), "slice": best.slice_a, "msd_slice": best.slice_b}
                # Identity where both loaders put the patient in the same canonical orientation.
                row["msd_slice_turned"] = _describe(best.transform)
            row["candidates"] = [{"msd": b, "r": round(r, 4)} for b, r in ranked[:3]]
            rows.append(row)
    return {
        "rule": {
            "window_hu": list(pm.WINDOW_HU),
            "grid": pm.GRID,
            "highpass_sigma_px": pm.HIGHPASS_SIGMA_PX,
            "match_r": pm.MATCH_R,
        },
        "scores": finding.distribution(),
        "matches": rows,
        "same_person_within": {
            name: _cross_pairs(finding.tables[name]) for name in ("msd-msd", "lits-lits", "ircad-lits")
        },
        "split": {k: list(getattr(finding.split, k)) for k in ("excluded", "selection", "report", "train")},
        "agrees_with_recorded": finding.agrees,
    }


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m litseg.train.data.patients DATA [--json OUT]``.

    Exit codes: 0 the recorded constants are what the data gives; 1 they are not (or the matching is
    ambiguous): the output says how; 2 usage; 3 a collection is missing or unreadable.
    """
    parser = argparse.ArgumentParser(
        prog="python -m litseg.train.data.patients",
        description="Find the same patients across msd-liver-slices, ircad-liver-slices and lits-tumor-slices "
        "by image content, and the clean MSD split they give.",
    )
    parser.add_argument("data", type=Path, help="the folder holding the three collections (../shared/data)")
    parser.add_argument("--json", type=Path, default=None, help="write the matches, scores and split here")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        finding = find(load_signatures(args.data))
    except LitsegError as exc:
        print(f"patients: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ValueError as exc:
        print(f"patients: error: {exc}", file=sys.stderr)
        return 1
    result = to_json(finding)
    if args.json:
        _write_atomically(args.json, json.dumps(result, indent=1) + "\n")
    for row in result["matches"]:  # type: ignore[attr-defined]
        case = f"msd-{row['msd_case']}" if row["msd_case"] is not None else "-"
        score = f"r={row['r']:.3f}" if "r" in row else ""
        best = ", ".join(f"{c['msd']} {c['r']:.3f}" for c in row["candidates"][:2])
        print(f"{row['patient']:>12} = {case:<10} {row['how'] or 'no match':<8} {score:<8} best: {best}")
    for name, kinds in result["scores"].items():  # type: ignore[attr-defined]
        print(f"scores {name}: " + ", ".join(f"{k} {lo:.3f}..{hi:.3f}" for k, (lo, hi) in kinds.items()))
    for name, pairs in result["same_person_within"].items():  # type: ignore[attr-defined]
        for p in pairs:
            print(f"same person within {name}? {p['a']} ~ {p['b']} r={p['r']:.3f} slices {p['slices']}")
    for role, cases in result["split"].items():  # type: ignore[attr-defined]
        print(f"{role}: {len(cases)} patients" + (f": {cases}" if role != "train" else ""))
    if not finding.agrees:
        print("the recorded constants differ from what the data gives (see above)", file=sys.stderr)
        return 1
    print("the recorded constants agree with the data")
    return 0


if __name__ == "__main__":
    sys.exit(main())
