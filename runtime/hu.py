"""CT numbers (Hounsfield units) that mean the same thing wherever the runtime uses them: one name each.

A threshold that belongs to one measurement only (the body outline of :mod:`~litseg.runtime.body_slices`,
bone in its rim) stays in that module, named after what it measures.
"""

from __future__ import annotations

__all__ = ["AIR_HU", "TISSUE_HU"]

#: The CT number of air and the floor of every HU volume the reader makes: stored values below it are padding
#: outside the scan field of view (-2048 and -3024 are common vendor choices) and are read as air; the
#: preprocessing fills the model grid outside the series with it.
AIR_HU = -1024.0
#: Tissue against air: above it a voxel is the patient's tissue (fat about -100, water 0, soft tissue, bone),
#: below it air, aerated lung (-900 to -700) or gas in the bowel.
TISSUE_HU = -500.0
