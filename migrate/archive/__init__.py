"""Archives as a whole: opening one by path and kind, checking it, browsing it.

The stores read and write messages; this layer knows which store a path
means (:mod:`.open`), whether an archive is sound (:mod:`.integrity`) and how
to search and show what it holds (:mod:`.browse`).
"""
