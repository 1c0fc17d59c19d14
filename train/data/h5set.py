"""The HDF5 training set that ``litseg-prepare`` and ``litseg-prepare-real`` write and ``litseg-train`` reads.

Layout: ``images`` float32 ``(n, h, w)`` (model input: the runtime's ``preprocess`` output), ``masks``
uint8 ``(n, h, w)`` label values, ``case_index`` / ``slice_index`` int32 ``(n,)``,
``slice_class_voxels`` int64 ``(n, 4)`` (counts of the label values 0-3 per slice), ``case_names``,
``case_spacing_mm`` (x, y, z; NaN where unknown), ``case_notes`` (JSON) per case, optional per-case
string tables (``case_split``: ``train`` / ``val`` for a fixed split; ``case_source``); attributes
``preprocess_spec``, ``task``, ``class_names``, ``class_voxels`` (per class; merged voxels count as
liver), ``merged_voxels``, ``label_values`` (JSON: value -> name), ``litseg_version``, ``source``.

Label values are the task's class indices plus, in a liver-tumor set, :data:`LIVER_OR_TUMOR` = 3:
"liver or tumor", for sources whose masks merged the two (a partial label; ``litseg-train`` gives those
pixels the marginal loss of the two classes).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from litseg.runtime.spec import PreprocessSpec
from litseg.runtime.version import litseg_version

#: Label values a mask may hold: the task's classes plus, in liver-tumor sets built from sources that
#: merged the two, 3 = "liver or tumor" (a partial label: the loss marginalises liver and tumor there).
LIVER_OR_TUMOR = 3
MASK_VALUES = 4  # columns of ``slice_class_voxels``: counts of the values 0, 1, 2, 3


class H5Set:
    """Append-only HDF5 training set, written to a temporary file and renamed when complete."""

    def __init__(self, path: Path, spec: PreprocessSpec, source: str, attrs: dict[str, object] | None = None) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        self.spec = spec
        self.source = source
        self.attrs = dict(attrs or {})
        h, w = spec.target_shape_yx
        self.file = h5py.File(self.tmp, "w", track_order=True)
        opts = {"compression": "gzip", "compression_opts": 1, "shuffle": True, "track_times": False}
        self.images = self.file.create_dataset(
            "images", (0, h, w), np.float32, maxshape=(None, h, w), chunks=(1, h, w), **opts
        )
        self.masks = self.file.create_dataset(
            "masks", (0, h, w), np.uint8, maxshape=(None, h, w), chunks=(1, h, w), **opts
        )
        self.case_index = self.file.create_dataset(
            "case_index", (0,), np.int32, maxshape=(None,), chunks=(4096,), track_times=False
        )
        self.slice_index = self.file.create_dataset(
            "slice_index", (0,), np.int32, maxshape=(None,), chunks=(4096,), track_times=False
        )
        self.slice_class_voxels = self.file.create_dataset(
            "slice_class_voxels", (0, MASK_VALUES), np.int64, maxshape=(None, MASK_VALUES), track_times=False
        )
        self.names: list[str] = []
        self.spacings: list[tuple[float, float, float]] = []
        self.notes: list[str] = []
        self.class_voxels = np.zeros(spec.num_classes, dtype=np.int64)
        self.merged_voxels = 0

    def append(
        self,
        name: str,
        images: np.ndarray,
        masks: np.ndarray,
        slices: np.ndarray,
        spacing_mm: tuple[float, float, float],
        notes: dict[str, object],
    ) -> None:
        """Add one case: ``images`` float32 ``(n, h, w)`` model input, ``masks`` uint8 label values,
        ``slices`` their indices in the case's volume, ``spacing_mm`` (x, y, z; NaN where the source
        lost it), ``notes`` (JSON-able) what preparation found."""
        top = int(masks.max()) if masks.size else 0
        allowed = self.spec.num_classes - 1 + (self.spec.task == "liver-tumor")
        if top > allowed:
            raise ValueError(f"{name}: mask value {top} outside 0..{allowed} for task {self.spec.task}")
        n0, n1 = self.images.shape[0], self.images.shape[0] + images.shape[0]
        for ds in (self.images, self.masks, self.case_index, self.slice_index, self.slice_class_voxels):
            ds.resize(n1, axis=0)
        self.images[n0:n1] = images
        self.masks[n0:n1] = masks
        self.case_index[n0:n1] = len(self.names)
        self.slice_index[n0:n1] = slices
        counts = np.stack([np.bincount(m.ravel(), minlength=MASK_VALUES) for m in masks]) if len(masks) else None
        if counts is not None:
            self.slice_class_voxels[n0:n1] = counts
            # merged voxels count as liver in the class balance (the class weights), and apart as well
            self.class_voxels += counts[:, : self.class_voxels.size].sum(axis=0)
            if self.spec.task == "liver-tumor":
                self.class_voxels[1] += counts[:, LIVER_OR_TUMOR].sum()
                self.merged_voxels += int(counts[:, LIVER_OR_TUMOR].sum())
        self.names.append(name)
        self.spacings.append(spacing_mm)
        self.notes.append(json.dumps(notes, sort_keys=True))

    def finish(self, case_data: dict[str, list[str]] | None = None, attrs: dict[str, object] | None = None) -> None:
        """Write the per-case tables and attributes and move the file into place; ``case_data`` adds
        string datasets with one entry per case (e.g. ``case_split``), ``attrs`` file attributes."""
        f = self.file
        strings = h5py.string_dtype()
        f.create_dataset("case_names", data=np.array(self.names, dtype=object), dtype=strings, track_times=False)
        f.create_dataset("case_spacing_mm", data=np.array(self.spacings, dtype=np.float64), track_times=False)
        f.create_dataset("case_notes", data=np.array(self.notes, dtype=object), dtype=strings, track_times=False)
        f.attrs["preprocess_spec"] = self.spec.to_json()
        f.attrs["task"] = self.spec.task
        f.attrs["class_names"] = json.dumps(list(self.spec.class_names))
        f.attrs["class_voxels"] = self.class_voxels
        f.attrs["litseg_version"] = litseg_version()
        f.attrs["source"] = self.source
        f.attrs["merged_voxels"] = self.merged_voxels
        f.attrs["label_values"] = json.dumps(
            {**dict(enumerate(self.spec.class_names)), LIVER_OR_TUMOR: "liver-or-tumor"}
            if self.spec.task == "liver-tumor"
            else dict(enumerate(self.spec.class_names))
        )
        for name, values in (case_data or {}).items():
            if len(values) != len(self.names):
                raise ValueError(f"case_data {name!r} has {len(values)} entries for {len(self.names)} cases")
            f.create_dataset(name, data=np.array(values, dtype=object), dtype=strings, track_times=False)
        for key, value in {**self.attrs, **(attrs or {})}.items():
            f.attrs[key] = value
        f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.file.close()
        finally:
            self.tmp.unlink(missing_ok=True)
