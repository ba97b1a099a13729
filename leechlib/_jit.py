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

Threads: every kernel call goes through :class:`num_threads`, which sets the number
of threads of the call's parallel region (``workers``).  Numba's TBB and OpenMP
threading layers run parallel regions launched from several Python threads side by
side; its ``workqueue`` layer (the fallback when neither is installed) cannot, and
aborts the process.  Where the layer is not thread-safe, :class:`num_threads` holds
one process-wide lock for the duration of the call, so concurrent calls take turns.

Numba's OpenMP layer sets the thread count of the process's OpenMP runtime, which
other libraries in the process share: PyTorch's CPU operators run on the same
``libgomp``, and would keep whatever count Numba restored on exit (its own, the
number of cores) instead of the one set with ``torch.set_num_threads``.  When torch
has already been imported by someone else, :class:`num_threads` gives torch its
count back on exit; leechlib itself never imports torch.
"""

from __future__ import annotations

import operator
import os
import sys
import threading

__all__ = ["jit", "pjit", "num_threads", "layer_is_threadsafe", "CACHE"]

CACHE = os.environ.get("LEECHLIB_NO_CACHE", "0") not in ("1", "true", "True", "yes")


def _numba():
    import numba  # imported here so that ``import leechlib`` stays light

    return numba


def jit(fn=None, *, slp: bool = False, **kwargs):
    """Decorate ``fn`` as a serial Numba ``njit`` kernel (lazy, cached).

    ``slp=True``: compile with LLVM's straight-line (SLP) vectorizer (see
    :class:`_SLPKernel`); for entry points called from Python only.
    """
    opts = dict(nogil=True, cache=CACHE, fastmath=False)
    opts.update(kwargs)

    def wrap(f):
        nb = _numba()
        try:
            disp = nb.njit(**opts)(f)
        except RuntimeError:  # no writable cache location (read-only install)
            opts["cache"] = False
            disp = nb.njit(**opts)(f)
        if slp and isinstance(disp, nb.core.dispatcher.Dispatcher):  # not under NUMBA_DISABLE_JIT
            return _SLPKernel(disp)
        return disp

    return wrap(fn) if fn is not None else wrap


#: held while a kernel compiles with the SLP vectorizer switched on
_SLP_LOCK = threading.Lock()


class _SLPKernel:
    """A kernel compiled with LLVM's SLP vectorizer, which Numba leaves off by default.

    The SLP vectorizer packs independent scalar operations of straight-line code
    (the eight lanes of an octet's dot product) into vector instructions; Numba turned
    it off by default after miscompilations elsewhere (numba/numba#8852), so it is on
    here only for the kernels that ask for it, each checked against its numpy
    reference by the test suite.  Numba reads the setting when it optimizes a module:
    the first calls of a signature compile (or load from the cache) with it switched
    on under a lock, and put it back.  Called from Python only (not from other
    kernels).
    """

    def __init__(self, dispatcher):
        self._disp = dispatcher
        self._known: set = set()
        self.__name__ = dispatcher.py_func.__name__
        self.__doc__ = dispatcher.py_func.__doc__
        self.py_func = dispatcher.py_func

    def __call__(self, *args):
        key = tuple((type(a), getattr(a, "dtype", None), getattr(a, "ndim", None)) for a in args)
        if key not in self._known:
            config = _numba().core.config
            with _SLP_LOCK:
                old = config.SLP_VECTORIZE
                config.SLP_VECTORIZE = 1
                try:
                    self._disp.compile(tuple(self._disp.typeof_pyval(a) for a in args))
                finally:
                    config.SLP_VECTORIZE = old
            self._known.add(key)
        return self._disp(*args)

    def __getattr__(self, name):  # inspect_asm, signatures, ... of the dispatcher
        return getattr(self._disp, name)


def pjit(fn=None, **kwargs):
    """Decorate ``fn`` as a parallel Numba kernel (``prange`` over the batch); ``slp`` as in :func:`jit`."""
    kwargs.setdefault("parallel", True)
    return jit(fn, **kwargs)


def resolve_workers(workers) -> int:
    """Map scipy's ``workers`` convention (None/1: one thread, -1: all cores) to a count."""
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


#: Numba threading layers that run parallel regions from several threads at once
_THREADSAFE_LAYERS = ("tbb", "omp")
#: serialises leechlib's parallel regions where the layer is not thread-safe
_PARALLEL_LOCK = threading.RLock()
_SAFE: list = []  # the answer of layer_is_threadsafe, once the layer is running


def layer_is_threadsafe() -> bool:
    """Whether Numba's threading layer can run parallel regions from several Python
    threads at once (TBB, OpenMP; not ``workqueue``).  Starts the layer if needed."""
    if _SAFE:
        return _SAFE[0]
    nb = _numba()
    if nb.config.DISABLE_JIT:  # plain Python: no threading layer at all
        return True
    nb.get_num_threads()  # launches the threading layer (Numba locks that itself)
    try:
        safe = nb.threading_layer() in _THREADSAFE_LAYERS
    except ValueError:  # pragma: no cover - not running: assume the worst
        return False
    _SAFE.append(safe)
    return safe


def _torch_threads():
    """torch's intra-op thread count if torch is already imported (never imports it)."""
    torch = sys.modules.get("torch")
    get = getattr(torch, "get_num_threads", None)
    return get() if callable(get) else None


class num_threads:
    """Context manager running Numba parallel kernels on ``workers`` threads.

    Where the threading layer is not thread-safe (``workqueue``) it also holds a
    process-wide lock until it exits, so that kernels launched from several Python
    threads run one after the other instead of aborting the process.
    """

    def __init__(self, workers):
        self.n = resolve_workers(workers)

    def __enter__(self):
        self._torch = _torch_threads()  # before the layer starts: that may change it
        nb = _numba()
        self._locked = not layer_is_threadsafe()
        if self._locked:
            _PARALLEL_LOCK.acquire()
        try:
            self._old = nb.get_num_threads()
            nb.set_num_threads(self.n)
        except BaseException:
            if self._locked:
                _PARALLEL_LOCK.release()
            raise
        return self.n

    def __exit__(self, *exc):
        try:
            _numba().set_num_threads(self._old)
            if self._torch is not None and _torch_threads() != self._torch:
                sys.modules["torch"].set_num_threads(self._torch)
        finally:
            if self._locked:
                _PARALLEL_LOCK.release()
        return False
