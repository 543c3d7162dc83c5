"""The engine: one transfer loop, and the wrappers and reporters around it.

Library use: build a source and a destination store and call
:func:`transfer`; see :mod:`migrate.engine.transfer`.
"""

from migrate.engine.transfer import TransferOptions, transfer
from migrate.results import FolderResult, TransferResult

__all__ = ["FolderResult", "TransferOptions", "TransferResult", "transfer"]
