"""litseg training: the pipeline from CT to a trained network, one subpackage per stage.

- :mod:`.phantom`: the synthetic CT phantom (scene, anatomy by body region, renderer, LiTS-layout writer).
- :mod:`.data`: training data (LiTS preparation, real-slice loaders with their orientation and HU maps,
  patient matching across exports, the HDF5 set).
- :mod:`.fit`: the U-Net and its optimisation (config, dataset and sampling, losses, loop, checkpoints).
- :mod:`.evaluate`: LiTS metrics, real-slice and shipped-path scoring, negatives, calibration, model cards.

Imports point down this list and to :mod:`litseg.runtime` (never to :mod:`litseg.export`, which builds on
:mod:`.fit`): ``phantom`` imports no other subpackage; ``data`` may import ``phantom``; ``fit`` may import
``data``; ``evaluate`` may import ``data`` and ``fit``. :mod:`.launch` holds the console scripts.
"""
