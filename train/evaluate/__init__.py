"""Evaluation and what follows from it: LiTS metrics on label maps (:mod:`.metrics`, ``litseg-eval``), real
slices scored through the model (:mod:`.slices`, ``litseg-eval-slices``), phantoms without a liver
(:mod:`.negatives`), post-processing calibration (:mod:`.calibrate`) and model cards (:mod:`.model_card`,
:mod:`.model_card_real`). Imports :mod:`..data`, :mod:`..fit` and :mod:`litseg.runtime`.
"""
