"""A minimal NRRD reader (raw or gzip, 3-D, LPS space) for reference label maps such as 3D Slicer's."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from litseg.runtime.errors import InputError
from litseg.runtime.volume import Volume

_DTYPES = {
    "unsigned char": np.uint8,
    "uchar": np.uint8,
    "uint8": np.uint8,
    "short": np.int16,
    "int16": np.int16,
    "unsigned short": np.uint16,
    "ushort": np.uint16,
    "int": np.int32,
    "float": np.float32,
}


def read_nrrd(path: str | Path) -> Volume:
    """Read a 3-D NRRD file (``space: left-posterior-superior``) into a volume."""
    raw = Path(path).read_bytes()
    header, sep, data = raw.partition(b"\n\n")
    if not header.startswith(b"NRRD") or not sep:
        raise InputError(f"{path} is not an NRRD file")
    fields = dict(line.split(": ", 1) for line in header.decode().splitlines()[1:] if ": " in line)
    if fields.get("space") != "left-posterior-superior":
        raise InputError(f"{path}: space {fields.get('space')!r} is not supported; expected left-posterior-superior")
    if fields.get("type") not in _DTYPES or fields.get("dimension") != "3":
        raise InputError(f"{path}: type {fields.get('type')!r} / dimension {fields.get('dimension')!r} unsupported")
    sizes = [int(v) for v in fields["sizes"].split()]
    vectors = [[float(x) for x in v.strip("()").split(",")] for v in fields["space directions"].split()]
    origin = [float(x) for x in fields["space origin"].strip("()").split(",")]
    payload = gzip.decompress(data) if fields.get("encoding") in ("gzip", "gz") else data
    dtype = np.dtype(_DTYPES[fields["type"]]).newbyteorder("<" if fields.get("endian", "little") == "little" else ">")
    array = np.frombuffer(payload, dtype=dtype).reshape(sizes[::-1]).astype(dtype.newbyteorder("="))
    affine = np.eye(4)
    affine[:3, :3] = np.array(vectors).T
    affine[:3, 3] = origin
    return Volume(array, affine)
