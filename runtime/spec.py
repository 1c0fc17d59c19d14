"""The preprocessing spec: recorded with the trained model, replayed by inference.

It is saved in the training checkpoint, written into the ONNX metadata under :data:`SPEC_METADATA_KEY`
(JSON) and read back by the runtime, so the runtime feeds the model exactly what it was trained on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

#: ONNX metadata key holding the spec as JSON.
SPEC_METADATA_KEY = "litseg.preprocess_spec"
#: Version of the spec format; bump on any change of meaning.
SPEC_VERSION = 1
#: The orientation the model sees: rows run to the patient's posterior, columns to the patient's left,
#: slices to superior (the standard axial display, DICOM ImageOrientationPatient 1\0\0\0\1\0).
CANONICAL_ORIENTATION = "LPS"

TASK_CLASSES: dict[str, tuple[str, ...]] = {
    "liver": ("background", "liver"),
    "liver-tumor": ("background", "liver", "tumor"),
}


@dataclass(frozen=True)
class PreprocessSpec:
    """How CT slices become model input.

    Attributes
    ----------
    task
        ``"liver"`` or ``"liver-tumor"``.
    class_names
        Output channel names, background first.
    window_hu
        ``(lo, hi)`` Hounsfield window; values are clipped to it and scaled to [0, 1].
    target_shape_yx
        In-plane size of the model input, rows x columns.
    orientation
        Canonical orientation the slices are turned into before resampling (see
        :data:`CANONICAL_ORIENTATION`).
    version
        Spec format version.
    """

    task: str = "liver-tumor"
    class_names: tuple[str, ...] = TASK_CLASSES["liver-tumor"]
    window_hu: tuple[float, float] = (-200.0, 300.0)
    target_shape_yx: tuple[int, int] = (256, 256)
    orientation: str = CANONICAL_ORIENTATION
    version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "window_hu", tuple(float(v) for v in self.window_hu))
        object.__setattr__(self, "target_shape_yx", tuple(int(v) for v in self.target_shape_yx))
        if self.task not in TASK_CLASSES:
            raise ValueError(f"task must be one of {sorted(TASK_CLASSES)}; got {self.task!r}")
        if self.class_names != TASK_CLASSES[self.task]:
            expected = TASK_CLASSES[self.task]
            raise ValueError(f"class_names for task {self.task!r} must be {expected}; got {self.class_names}")
        if len(self.window_hu) != 2 or not self.window_hu[1] > self.window_hu[0]:
            raise ValueError(f"window_hu must be (lo, hi) with hi > lo; got {self.window_hu}")
        if len(self.target_shape_yx) != 2 or min(self.target_shape_yx) < 16:
            raise ValueError(f"target_shape_yx must be two sizes >= 16; got {self.target_shape_yx}")
        if self.orientation != CANONICAL_ORIENTATION:
            raise ValueError(f"orientation must be {CANONICAL_ORIENTATION!r}; got {self.orientation!r}")
        if self.version != SPEC_VERSION:
            raise ValueError(
                f"preprocessing spec version {self.version} is not supported by this litseg "
                f"(supports {SPEC_VERSION}); upgrade litseg or re-export the model"
            )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PreprocessSpec:
        data: Any = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"preprocessing spec must be a JSON object; got {type(data).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"preprocessing spec has unknown fields {unknown}; known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def for_task(cls, task: str, **kwargs: Any) -> PreprocessSpec:
        if task not in TASK_CLASSES:
            raise ValueError(f"task must be one of {sorted(TASK_CLASSES)}; got {task!r}")
        return cls(task=task, class_names=TASK_CLASSES[task], **kwargs)
