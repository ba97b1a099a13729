"""The one jit policy of leechlib.

Every Numba kernel in :mod:`leechlib._kernels` is decorated with :func:`jit` or
:func:`pjit` from here, so compilation policy lives in one place:

* **lazy**: nothing compiles at import; a kernel compiles on its first call;
* **cached**: compiled machine code is cached on disk (``cache=True``) unless the
  environment variable ``LEECHLIB_NO_CACHE=1`` is set.  Numba falls back to an
  in-memory compile on read-only installs, so a missing cache never crashes;
* ``NUMBA_DISABLE_JIT=1`` turns every kernel into the same plain Python code.

Kernels import ``prange`` from :mod:`numba` themselves; kernel modules are only
imported by the public wrappers on first use.
"""

from __future__ import annotations

import os

__all__ = ["jit", "pjit", "num_threads", "CACHE"]

CACHE = os.environ.get("LEECHLIB_NO_CACHE", "0") not in ("1", "true", "True", "yes")


def _numba():
    import numba  # imported here so that ``import leechlib`` stays light

    return numba


def jit(fn=None, **kwargs):
    """Decorate ``fn`` as a serial Numba ``njit`` kernel (lazy, cached)."""
    opts = dict(nogil=True, cache=CACHE, fastmath=False)
    opts.update(kwargs)

    def wrap(f):
        nb = _numba()
        try:
            return nb.njit(**opts)(f)
        except RuntimeError:  # no writable cache location (read-only install)
            opts["cache"] = False
            return nb.njit(**opts)(f)

    return wrap(fn) if fn is not None else wrap


def pjit(fn=None, **kwargs):
    """Decorate ``fn`` as a parallel Numba kernel (``prange`` over the batch)."""
    kwargs.setdefault("parallel", True)
    return jit(fn, **kwargs)


def resolve_workers(workers) -> int:
    """Map scipy's ``workers`` convention (None/1: one thread, -1: all cores) to a count."""
    import operator

    if workers is None:
        return 1
    if isinstance(workers, bool):
        raise TypeError("workers must be an int or None, got bool")
    try:
        w = operator.index(workers)
    except TypeError:
        raise TypeError(f"workers must be an int or None, got {type(workers).__name__}") from None
    n = _numba().config.NUMBA_NUM_THREADS
    if w == -1:
        return n
    if w < 1:
        raise ValueError(f"workers must be -1 or a positive int, got {w}")
    return min(w, n)


class num_threads:
    """Context manager running Numba parallel kernels on ``workers`` threads."""

    def __init__(self, workers):
        self.n = resolve_workers(workers)

    def __enter__(self):
        nb = _numba()
        self._old = nb.get_num_threads()
        nb.set_num_threads(self.n)
        return self.n

    def __exit__(self, *exc):
        _numba().set_num_threads(self._old)
        return False
