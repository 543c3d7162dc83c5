"""The short soak: a few fault trials of bench/soak.py (fixed seed) in the suite.

One trial per fault kind, the four commands in turn; each one is a faulted run and
the reruns a user would make, then a check for hangs, losses, duplicates and
tracebacks. The long run (200+ trials, random seed) is ``python bench/soak.py``;
its results are in bench/RESULTS.md."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "soak", Path(__file__).resolve().parent.parent / "bench" / "soak.py")
assert _spec and _spec.loader
soak = importlib.util.module_from_spec(_spec)
sys.modules["soak"] = soak  # its dataclasses look their module up
_spec.loader.exec_module(soak)


def test_short_soak_has_no_hang_loss_duplicate_or_traceback(dovecot, tmp_path):
    outcomes = soak.soak(dovecot, len(soak.FAULTS), seed=1616, work=tmp_path, cover=True)
    assert {o.fault for o in outcomes} == set(soak.FAULTS)
    assert {o.command for o in outcomes} == set(soak.COMMANDS)
    bad = [o for o in outcomes if not o.ok]
    assert not bad, soak.report(outcomes, 1616, 0)
