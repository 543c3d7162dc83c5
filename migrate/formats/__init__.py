"""Message formats the stores share: mboxrd framing and the summary for the index.

Pure functions over bytes: no I/O, no network, nothing from the layers above.
"""
