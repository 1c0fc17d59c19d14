"""Training data: LiTS17 preparation (:mod:`.prepare`, ``litseg-prepare``), real CT slices stored as pictures
(:mod:`.real_slices`, with their orientation from anatomy in :mod:`.orientation` and their HU maps in
:mod:`.intensity_map`), the real-slice HDF5 sets (:mod:`.prepare_real`, ``litseg-prepare-real``), the HDF5
layout itself (:mod:`.h5set`) and a NRRD reader for reference labels (:mod:`.nrrd`). Imports
:mod:`litseg.runtime` (the same ``preprocess`` as inference) and may import :mod:`..phantom`; never
:mod:`..fit` or :mod:`..evaluate`.
"""
