"""Run the mailmigrate CLI and write its own peak RSS (VmHWM, KiB) to $MM_RSS_FILE.

Why not wait4()'s ru_maxrss: Linux carries the parent's high-water mark into
a child across fork/vfork + exec, so a big test runner would inflate the
child's number. VmHWM belongs to the process's own address space only.
"""

from __future__ import annotations

import atexit
import os
import runpy
import sys
from pathlib import Path


def _write_peak() -> None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            Path(os.environ["MM_RSS_FILE"]).write_text(line.split()[1])


if __name__ == "__main__":
    atexit.register(_write_peak)
    sys.argv = ["mailmigrate", *sys.argv[1:]]
    runpy.run_module("migrate", run_name="__main__", alter_sys=True)
