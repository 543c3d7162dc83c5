"""mailmigrate: back up, drain, restore and migrate email, exactly once.

The CLI (:mod:`migrate.cli`) is a thin layer; everything else is a library:
build a source and a destination store and hand them to
:func:`migrate.engine.transfer`. The subpackages are layers, each importing
only those below it: ``cli`` → ``engine`` → ``archive`` → ``stores`` →
``config`` and ``formats`` → the shared modules at this level
(``model``, ``errors``, ``results``, ``reporting``, the folder-name modules).
"""

__version__ = "0.1.0"
