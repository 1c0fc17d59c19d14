"""litseg-serve: a DICOM node (pynetdicom) that receives CT series by C-STORE and returns their DICOM SEG.

Modules follow the node's layers: ``config`` (settings), ``handlers`` (association handlers: C-ECHO,
C-STORE SCP), ``spool`` (crash-safe on-disk state), ``series_queue`` (series completion, bounded queue),
``worker`` (segmentation with one shared model), ``forward`` (C-STORE SCU with back-off), ``status``
(``--status`` and the per-series log line), ``server`` (the node wiring them), ``cli`` (``litseg-serve``).
The node uses only the runtime's public API; the runtime never imports the node.
"""

import logging

from .config import Destination, NodeConfig
from .server import Node

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["Destination", "Node", "NodeConfig"]
