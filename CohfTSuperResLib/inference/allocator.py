"""Keep freed memory in the process during inference, so large activations are not re-faulted page by page.

glibc's malloc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh
mmap and gives it back on free; torch's CPU allocator does not cache, so each HR-size activation
of the network costs thousands of page faults and a zero-fill of every page, every time
(bench/cpu_choices.py measures the difference). `reuse_freed_memory` turns mmap off and raises the
trim threshold for the duration of a run, then restores glibc's defaults and trims, so the memory
goes back to the system afterwards. Elsewhere (macOS, Windows, musl) it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import platform
from collections.abc import Iterator

M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, from glibc's malloc.h
M_TOP_PAD = -2
M_MMAP_MAX = -4
KEEP_FREED = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 64 << 20}
GLIBC_DEFAULTS = {M_MMAP_MAX: 65536, M_TRIM_THRESHOLD: 128 << 10, M_TOP_PAD: 128 << 10}


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (the only one with these mallopt parameters), else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def _apply(libc: ctypes.CDLL, settings: dict[int, int]) -> bool:
    """mallopt each setting; True when glibc accepted all of them."""
    return all(libc.mallopt(ctypes.c_int(parameter), ctypes.c_int(value)) == 1 for parameter, value in settings.items())


@contextlib.contextmanager
def reuse_freed_memory() -> Iterator[bool]:
    """For the duration, freed memory stays in the process for the next allocation (glibc only).

    Yields True when the setting is in force. Afterwards glibc's default parameters are restored
    and free memory is returned to the system (malloc_trim).
    """
    libc = _glibc()
    active = libc is not None and _apply(libc, KEEP_FREED)
    try:
        yield active
    finally:
        if libc is not None:
            _apply(libc, GLIBC_DEFAULTS)
            libc.malloc_trim(ctypes.c_size_t(0))
