"""Fitting the U-Net: the network (:mod:`.unet`), run settings (:mod:`.config`), the torch dataset with
augmentation and crops (:mod:`.dataset`), the sets of a run and their mixing (:mod:`.training_sets`,
:mod:`.sampling`), losses (:mod:`.losses`), the loop with validation (:mod:`.loop`, :mod:`.validation`),
resumable checkpoints (:mod:`.checkpoint`), logs (:mod:`.run_log`), the command line (:mod:`.trainer`,
``litseg-train``) and a time estimate (:mod:`.step_timing`). Imports :mod:`..data` and :mod:`litseg.runtime`;
never :mod:`..evaluate`.
"""
