"""CT volume -> model input, and model output -> labels on the native grid.

:func:`preprocess` is the single code path shared by inference and by the training-set builder
(``litseg.train``): reorient into the canonical orientation, resample each slice in-plane to the
spec's target size, window and normalise. :func:`restore_labels` is its exact geometric inverse for
the prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from . import kernels
from .geometry import Reorientation, canonical_reorientation, resampled_affine
from .hu import AIR_HU
from .spec import PreprocessSpec
from .volume import Volume


@dataclass(frozen=True, eq=False)
class ModelInput:
    """Preprocessed slices and what is needed to map predictions back.

    Attributes
    ----------
    image
        The model input as a volume: float32 in [0, 1], shape ``(z, *spec.target_shape_yx)``, in the
        canonical orientation; its affine places every resampled pixel in the patient.
    reorientation
        What turned the native array into the canonical one.
    canonical_shape_zyx
        Shape of the canonical array before in-plane resampling.
    """

    image: Volume
    reorientation: Reorientation
    canonical_shape_zyx: tuple[int, int, int]


def kernel_input(volume: Volume) -> npt.NDArray[np.generic]:
    """The HU array as the fused kernel takes it: int16 or float32 (other dtypes converted), C-contiguous;
    no copy when it already is."""
    native = np.asarray(volume.array)
    if native.dtype not in (np.int16, np.float32):
        native = native.astype(np.float32)
    return np.ascontiguousarray(native)


def preprocess(volume: Volume, spec: PreprocessSpec) -> ModelInput:
    """Turn a HU volume into model input.

    Parameters
    ----------
    volume
        HU ``(z, y, x)`` (int16 or float32; other dtypes are converted), any axial orientation.
    spec
        The model's preprocessing spec.
    """
    # Values below air are padding outside the scan field (-2048, -3024): read as air, as the DICOM reader
    # does, so NIfTI and DICOM inputs give the same model input. One fused pass: no reoriented copy.
    reorientation = canonical_reorientation(volume.affine_lps)
    image = kernels.preprocess_slices(
        kernel_input(volume), reorientation.flags, spec.target_shape_yx, spec.window_hu, AIR_HU
    )
    canonical_affine = reorientation.apply_affine(volume.affine_lps, volume.shape_zyx)
    canonical_shape = reorientation.canonical_shape(volume.shape_zyx)
    uids = tuple(reversed(volume.source_sop_uids)) if reorientation.flip_z else volume.source_sop_uids
    affine = resampled_affine(canonical_affine, canonical_shape[1:], spec.target_shape_yx)
    return ModelInput(Volume(image, affine, volume.frame_of_reference_uid, uids), reorientation, canonical_shape)


def restore_labels(probs: npt.NDArray[np.float32], model_input: ModelInput, native: Volume) -> Volume:
    """Map per-slice class probabilities back to labels on the native grid and orientation.

    Parameters
    ----------
    probs
        float32 ``(z, classes, *target_shape_yx)``, slices in the order of ``model_input.image``.
    model_input
        What :func:`preprocess` returned for ``native``.
    native
        The volume that was preprocessed; the labels get its geometry.

    Returns
    -------
    Volume
        uint8 labels (class indices), same shape, affine and slice UIDs as ``native``.
    """
    expected = (model_input.image.shape_zyx[0], model_input.image.shape_zyx[1:])
    if probs.ndim != 4 or (probs.shape[0], probs.shape[2:]) != expected:
        raise ValueError(f"probs must be (z, classes, h, w) matching {expected}; got {probs.shape}")
    labels_canonical = kernels.resample_argmax(
        np.ascontiguousarray(probs, dtype=np.float32), model_input.canonical_shape_zyx[1:]
    )
    labels = model_input.reorientation.inverse().apply_array(labels_canonical)
    return native.with_array(labels)
