"""SIGINT and SIGTERM during a run (training, quantizing a folder): stop cleanly, exit 130 or 143.

:class:`StopSignals` is installed by :func:`torch_ext.lila.train.train` for the length of
a run (in the main thread only, and only over the default handlers: a handler the
caller installed is left alone; the previous handlers come back afterwards).  A
first SIGINT or SIGTERM is recorded; the training loop sees it when the current
optimizer step ends (all processes agree on it) and stops there as an
interruption: a checkpoint of that step, then :class:`Interrupted`'s exit.  In
phases with no state to corrupt (reading data, evaluating) a single process stops
at once (``immediate``).  A second signal stops at once, without a checkpoint.
"""

from __future__ import annotations

import contextlib
import signal
import threading

__all__ = ["EXIT_CODES", "Interrupted", "StopSignals"]

#: exit status of the command line after each signal (128 + the signal number, as shells report it)
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}
_SIGNALS = tuple(getattr(signal, n) for n in EXIT_CODES if hasattr(signal, n))


class Interrupted(KeyboardInterrupt):
    """A stop asked for by a signal: ``signal`` is its name; ``hard`` if it was the second one."""

    def __init__(self, signal_name: str, hard: bool = False):
        super().__init__(signal_name)
        self.signal, self.hard = signal_name, hard


class StopSignals:
    """Records SIGINT/SIGTERM while installed (a context manager); see the module docstring.

    Examples
    --------
    >>> import os, signal
    >>> with StopSignals() as stop:
    ...     os.kill(os.getpid(), signal.SIGTERM)
    ...     stop.requested
    'SIGTERM'
    """

    def __init__(self, immediate: bool = False):
        self.requested: str | None = None
        self.immediate = immediate
        self._old: dict = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                current = signal.getsignal(sig)
                if current in (signal.default_int_handler, signal.SIG_DFL):
                    self._old[sig] = current
                    signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None:
            raise Interrupted(name, hard=True)
        self.requested = name
        if self.immediate:
            raise Interrupted(name)

    @contextlib.contextmanager
    def at_once(self, enabled: bool = True):
        """Within, a signal stops at once (no state is being changed); a pending one stops on entry."""
        before = self.immediate
        self.immediate = enabled
        try:
            if enabled and self.requested is not None:
                raise Interrupted(self.requested)
            yield
        finally:
            self.immediate = before
