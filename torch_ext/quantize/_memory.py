"""Giving memory back between the layers of a quantization run.

Two things keep memory resident after a layer is done with it: objects in
reference cycles (the tracebacks of the exceptions that stop the calibration's
forward passes, :mod:`~torch_ext.quantize.calibrate`, hold the frames of those
passes), which only the cyclic garbage collector frees, and it runs by the count of
objects allocated, not by their size; and arrays below glibc's (dynamic, up to
32 MB) mmap threshold, which come from the C heap, whose free pages between live
allocations stay resident.  :func:`free_memory` after each layer and block handles
both.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc

__all__ = ["free_memory"]


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or ``None`` (another C library, or none found)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def free_memory() -> None:
    """Collect cyclic garbage, then give the C heap's free pages back (glibc; elsewhere
    the collection only)."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
