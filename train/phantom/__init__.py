"""The synthetic CT phantom in the LiTS17 layout (``litseg-phantom``): :mod:`.case` draws and writes a case,
:mod:`.regions` chooses its body region and slices, :mod:`.scene` holds the shapes, one module per body part
(:mod:`.torso`, :mod:`.thorax`, :mod:`.abdomen`, :mod:`.pelvis`, :mod:`.head`, :mod:`.neck`) draws the anatomy,
and :mod:`.render` rasterises it with partial volume (numba). Imports only :mod:`litseg.runtime`, never the
other training subpackages.
"""
