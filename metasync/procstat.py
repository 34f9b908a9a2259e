"""Peak memory of this process, for ``--stats`` and benchmarks.

``getrusage(RUSAGE_SELF).ru_maxrss`` is wrong for a child process on Linux: the
high-water mark lives in the signal struct, which a fork copies and an exec keeps,
so a small child of a big parent reports the parent's peak. ``VmHWM`` in
``/proc/self/status`` belongs to the process's own address space.
"""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: best effort
