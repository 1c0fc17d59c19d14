"""A real head CT for tests: Debian's ``invesalius-examples`` (``Cranium.inv3``), a real negative (no liver).

The file is a gzip tar holding ``main.plist`` (an XML property list: modality, matrix shape, dtype,
spacing) and ``matrix.dat`` (the raw HU volume, little-endian). InVesalius stores axial slices from the
skull base up with the image rows flipped against DICOM: the face lies towards the high row index, so
rows run anterior (-y in LPS); slices run superior (+z). Left and right cannot be told from the skull; the
columns are taken to run to the patient's left (+x), as in DICOM. The package is GPL-2: never copy its
files into the repository; install it with ``apt-get install invesalius-examples``.
"""

from __future__ import annotations

import os
import plistlib
import tarfile
from pathlib import Path

import numpy as np
import pytest

from litseg.runtime.volume import Volume

CRANIUM = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")


def read_inv3(path: Path) -> Volume:
    """The CT volume of an InVesalius 3 project as an LPS volume (int16 HU, canonical axes)."""
    with tarfile.open(path, "r:gz") as archive:
        members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
        plist = plistlib.loads(_read(archive, members["main.plist"]))
        matrix = plist["matrix"]
        if plist.get("modality") != "CT" or matrix["dtype"] != "int16":
            raise ValueError(f"{path}: expected a CT int16 matrix; got {plist.get('modality')} {matrix['dtype']}")
        raw = _read(archive, members[matrix["filename"]])
    shape = tuple(int(v) for v in matrix["shape"])
    array = np.frombuffer(raw, dtype="<i2").reshape(shape).astype(np.int16)
    sx, sy, sz = (float(v) for v in plist["spacing"])
    affine = np.diag([sx, -sy, sz, 1.0])  # rows run anterior (the face at high row indices)
    affine[1, 3] = sy * (shape[1] - 1) / 2
    affine[0, 3] = -sx * (shape[2] - 1) / 2
    return Volume(array, affine)


def _read(archive: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = archive.extractfile(member)
    if handle is None:
        raise ValueError(f"{member.name} is not a file")
    return handle.read()


def head_ct() -> Volume:
    """The Cranium head CT; skips the test (naming the package) when it is not installed, or fails when
    ``LITSEG_REQUIRE_SHARED_DATA=1`` asks for every real data set."""
    if not CRANIUM.is_file():
        reason = f"real head CT {CRANIUM} missing: apt-get install invesalius-examples"
        if os.environ.get("LITSEG_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return read_inv3(CRANIUM)
