"""Evaluation and what follows from it: LiTS metrics on label maps (:mod:`.metrics`, ``litseg-eval``), real
slices scored through the shipped path as ``litseg-run`` runs them (:mod:`.shipped`, with the series it
writes in :mod:`.shipped_series` and the scores in :mod:`.shipped_scores`), the older per-slice model check
(:mod:`.slices`, ``litseg-eval-slices``), phantoms without a liver (:mod:`.negatives`), post-processing
calibration on phantoms (:mod:`.calibrate`) and on the real selection volumes (:mod:`.calibrate_real`), and
model cards (:mod:`.model_card`, :mod:`.model_card_real`). Imports :mod:`..data`, :mod:`..fit` and
:mod:`litseg.runtime`.
"""
