"""The MSD CASE numbers follow the file-name order of the LiTS volumes: placing a patient by that order.

The generator of ``msd-liver-slices`` numbered its source volumes (CASE ``10001..``) in the order of their
file names, which sorts LiTS volume numbers as strings: ``0, 1, 10, 100, ..., 109, 11, 110, ...``. Every
content match (:mod:`.patient_match`) of a lits-tumor volume or an IRCAD patient to an MSD CASE is an
anchor of that order; between two anchors the CASE numbers count the volumes in between, unless the
export skipped some of them there. So a patient whose slices lie at other levels of the body than its MSD
slices (content cannot tell it from a stranger) still has a known CASE wherever the anchors around it are
exactly as many CASE numbers apart as there are volumes between them. 3D-IRCADb-01 patient ``k`` (IRCAD
file CASE ``10000 + k``) is LiTS volume ``27 + k`` (the 20 IRCAD patients are LiTS volumes 28-47).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping

#: LiTS17 training volumes are numbered 0..130 (files volume-0.nii .. volume-130.nii).
LITS_VOLUMES = range(131)
#: 3D-IRCADb-01 patient k (IRCAD file CASE IRCAD_CASE_BASE + k) is LiTS volume IRCAD_LITS_OFFSET + k.
IRCAD_CASE_BASE = 10000
IRCAD_LITS_OFFSET = 27


def lits_volume(patient: str) -> int:
    """The LiTS volume of a lits-tumor or IRCAD patient id (``lits-48`` -> 48, ``ircad-10009`` -> 36)."""
    if match := re.fullmatch(r"lits-(\d+)", patient):
        return int(match.group(1))
    match = re.fullmatch(r"ircad-(\d+)", patient)
    if not match or not 1 <= int(match.group(1)) - IRCAD_CASE_BASE <= 20:
        raise ValueError(f"a patient id is lits-N (N = 0..130) or ircad-10001 .. ircad-10020; got {patient!r}")
    return int(match.group(1)) - IRCAD_CASE_BASE + IRCAD_LITS_OFFSET


def case_by_order(volume: int, anchors: Mapping[int, int]) -> int | None:
    """The MSD CASE of a LiTS ``volume`` by the CASE order, or None where the anchors cannot tell.

    ``anchors`` maps LiTS volumes to their MSD CASE (content matches). Between the nearest anchors on
    either side (in file-name order) the answer is given only if they are exactly as many CASE numbers
    apart as there are volumes between them (none of those volumes was skipped by the export).

    Raises
    ------
    ValueError
        The anchors do not follow the file-name order (then the order rule is wrong for this data).
    """
    position = {v: k for k, v in enumerate(sorted(LITS_VOLUMES, key=str))}
    if volume not in position or any(v not in position for v in anchors):
        raise ValueError(f"LiTS volumes are 0..130; got {volume} and anchors {sorted(anchors)}")
    ranked = sorted(anchors.items(), key=lambda item: position[item[0]])
    cases = [case for _, case in ranked]
    if any(b <= a for a, b in itertools.pairwise(cases)):
        raise ValueError(f"the anchors {dict(ranked)} do not follow the file-name order of the LiTS volumes")
    if volume in anchors:
        return anchors[volume]
    before = [(v, c) for v, c in ranked if position[v] < position[volume]]
    after = [(v, c) for v, c in ranked if position[v] > position[volume]]
    if not before or not after:
        return None
    (v0, c0), (v1, c1) = before[-1], after[0]
    if c1 - c0 != position[v1] - position[v0]:
        return None
    return c0 + position[volume] - position[v0]


def place_by_order(patients: Iterable[str], by_content: Mapping[str, int]) -> dict[str, int]:
    """The ``patients`` without a content match, placed in MSD by the CASE order (those it can place)."""
    anchors = {lits_volume(p): case for p, case in by_content.items()}
    placed: dict[str, int] = {}
    for patient in sorted(set(patients) - set(by_content)):
        case = case_by_order(lits_volume(patient), anchors)
        if case is not None:
            placed[patient] = case
    return placed
