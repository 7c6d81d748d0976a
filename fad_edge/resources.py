"""What this machine can hold: work whose arrays cannot fit in its memory is refused before it starts.

The bound is the machine's physical memory (or the container's memory limit, when lower), not what
is free at this moment: it refuses inputs that could never fit, with a message, instead of a crash
or the kernel's out-of-memory killer minutes later. It is no promise that what passes fits beside
everything else running. psutil would give the same total; a sysconf call needs no dependency.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from fad_edge.errors import FadEdgeError

# A container's memory limit: cgroup v2 ("max" when unlimited), then v1 (older Docker hosts, JetPack's L4T;
# a huge number when unlimited, which the physical memory then undercuts).
CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def memory_bytes() -> int:
    """Physical memory, or the container's limit when lower; 0 when neither can be read."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        total = 0
    for path in CGROUP_LIMITS:
        try:
            limit = path.read_text().strip()
        except OSError:
            continue
        if limit.isdigit() and (total == 0 or int(limit) < total):
            return int(limit)
        return total
    return total


# Binary units, largest first; a size beyond the last is still said in it (1.67e+08 EiB).
UNITS = (("EiB", 2**60), ("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


def readable_size(nbytes: float) -> str:
    """A byte count in the largest binary unit it fills, with 3 significant digits or more: 0.0 GiB says nothing,
    and neither do eighteen digits of GiB."""
    for unit, scale in UNITS:
        if nbytes >= scale:
            try:
                value = nbytes / scale
            except OverflowError:  # an absurd integer, beyond any float
                return f"more than {sys.float_info.max / scale:.3g} {unit}"
            if value < 999.5:  # 3 digits that do not round up to 1e+03
                return f"{value:.3g} {unit}"
            return f"{value:,.0f} {unit}" if value < 1e6 else f"{value:.3g} {unit}"  # only in the largest unit
    return f"{nbytes:.0f} bytes"


def check_fits(nbytes: float, what: str, hint: str, error: type[FadEdgeError] = FadEdgeError) -> None:
    """Raise a one-line `error` when `nbytes` is more than this machine's memory."""
    total = memory_bytes()
    if total and nbytes > total:
        raise error(f"{what} would need about {readable_size(nbytes)}, more than this machine's "
                    f"{readable_size(total)} of memory; {hint}")
