"""Training data: LiTS17 preparation (:mod:`.prepare`, ``litseg-prepare``), real CT slices stored as pictures
(:mod:`.real_slices` for MSD and IRCAD, :mod:`.lits_tumor` for the lits-tumor slices with separate tumour
labels; their orientation from anatomy in :mod:`.orientation`, their HU maps in :mod:`.intensity_map`), the
same patients found across those exports and the clean split that keeps test patients out of training
(:mod:`.patient_match`, :mod:`.case_order`, :mod:`.patients`), the real-slice HDF5 sets
(:mod:`.prepare_real`, ``litseg-prepare-real``), the HDF5 layout itself (:mod:`.h5set`) and a NRRD reader for
reference labels (:mod:`.nrrd`). Imports :mod:`litseg.runtime` (the same ``preprocess`` as inference) and may
import :mod:`..phantom`; never :mod:`..fit` or :mod:`..evaluate`.
"""
