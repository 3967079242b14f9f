"""The API process hands large freed buffers back to the operating system.

glibc's malloc serves a request from mmap above a threshold, and returns it to the system on
free, but it raises that threshold (up to 32 MB) each time such a buffer is freed, after which
buffers of that size come from its heaps and stay there when freed. One predict through a wide
layer, chunk by chunk, or one large rejected upload then left the API 0.5-3 GB larger for good.
A fixed threshold (mallopt M_MMAP_THRESHOLD also turns the adjustment off) keeps the process's
size to what it holds. Only the API: a worker's training steps reuse their buffers, and mmap's
fresh pages would cost them page faults on every step.
"""
from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("chainrule.api")
M_MMAP_THRESHOLD = -3          # glibc's malloc.h
MMAP_THRESHOLD_BYTES = 1 << 20


def return_large_buffers() -> bool:
    """Set glibc's mmap threshold; False (nothing done) on a C library without mallopt."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        log.info("not glibc: large buffers are left to this C library's malloc")
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
