"""Process-wide settings for speed on the CPU: glibc malloc keeps freed memory for the next step.

A training step allocates and frees the same large tensors at every step: the logits of a block of target
positions (128 x 5,824 floats, 3 MB), the output layer's gradient (6 MB), the recurrent loops' records. glibc's
malloc serves blocks above a threshold (128 KiB, raised as such blocks are freed, to 32 MiB at most) with
their own ``mmap`` and unmaps them when they are freed, and gives the top of its heap back to the system once
more than twice that threshold is free there. Memory given back is faulted in again, page by page and zeroed by
the kernel, when the next step allocates it: thousands of page faults and their system time at every step.

`keep_freed_memory` sets the two thresholds with ``mallopt``, so blocks up to 32 MiB come from the heap and
the heap keeps up to `TRIM_THRESHOLD` of free memory, and the page faults all but disappear. What is computed
does not change; the process holds on to memory it freed (its peak
resident size is what the step needs at its largest, as before). Other C libraries (musl, macOS) are left as
they are.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

# mallopt's parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: blocks up to this size come from the heap (glibc's largest allowed value on 64-bit systems)
MMAP_THRESHOLD = 32 * 1024 * 1024
#: free memory the heap keeps at its top rather than giving it back
TRIM_THRESHOLD = 1024 * 1024 * 1024

_applied = False


def keep_freed_memory() -> bool:
    """Set glibc malloc's thresholds as the module doc says, once per process. -> whether they are set (False on
    a system without glibc, or if mallopt refused a value)."""
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError) as error:
        log.debug("glibc's mallopt not found (%s): malloc left as it is", error)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success, 0 on an unaccepted value
    _applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    log.debug("glibc malloc keeps freed memory: %s", _applied)
    return _applied
