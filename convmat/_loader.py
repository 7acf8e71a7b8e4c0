"""Numba kernels loaded in the background: one mechanism for the products (:mod:`convmat.spmm`) and the fill.

A :class:`Loader` owns a family of kernels.  ``make()`` imports Numba and
returns the family's dispatchers (a dict; ``ImportError`` when Numba is not
installed); ``warm(kernels, key)`` loads the machine code of one signature
``key`` from Numba's cache (or compiles it).  Both run on one daemon thread
per loader, which works through a queue of signatures and stops when it is
empty: a caller never waits for Numba unless it asks to (:meth:`Loader.wait`,
:meth:`Loader.load`), and :meth:`Loader.ready` says whether a signature's
code is there.  A signature whose code fails to load is never ready (its
error is kept in ``failed``): callers take their path without it.

Importing Numba holds the GIL for about 0.3 s, so callers start a loader
when it competes least (after a product, after a build): that policy is
theirs.  A fork waits for every running loader (a child would inherit
import and compiler locks held by a thread it does not have), and a child
starts with empty queues.  A Numba that imports but fails is reported once,
with a ``RuntimeWarning``, and the family stays unavailable (callers take
their path without it).
"""

from __future__ import annotations

import os
import threading
import time
import warnings
import weakref

__all__ = ["Loader"]

_LOADERS: weakref.WeakSet = weakref.WeakSet()


class Loader:
    """Load a family of Numba kernels on a background thread, signature by signature.

    Parameters
    ----------
    name : str
        The family, for the thread's name and the warning of a broken Numba.
    make : callable
        ``make() -> dict``: import Numba and return the dispatchers (raises ``ImportError`` without Numba).
    warm : callable
        ``warm(kernels, key)``: load (or compile) the machine code of signature ``key``.
    """

    def __init__(self, name, make, warm):
        self.name, self._make, self._warm = name, make, warm
        self._lock = threading.Lock()
        self.kernels = None  # the dispatchers, once made
        self.error = None  # why there are none (ImportError, or a broken Numba)
        self.made = threading.Event()  # make() has run (kernels or error set)
        self.warm = set()  # the signatures whose code is loaded
        self.failed = {}  # signatures whose code failed to load: their errors
        self.queue = []  # signatures to load, in order
        self.thread = None  # the running loader thread
        _LOADERS.add(self)

    def ready(self, key):
        """The kernels if the code of signature ``key`` is loaded, else None; never waits, starts nothing."""
        return self.kernels if key in self.warm else None

    def start(self, key=None):
        """Queue ``key`` (if given) and start the thread if it is not running; returns at once."""
        with self._lock:
            if self.error is not None:
                return
            if key is not None and key not in self.warm and key not in self.failed and key not in self.queue:
                self.queue.append(key)
            if self.thread is None and (not self.made.is_set() or self.queue):
                self.thread = threading.Thread(target=self._run, name=f"convmat-{self.name}-loader", daemon=True)
                self.thread.start()

    def wait(self, key):
        """The kernels once the code of ``key`` is loaded (None without Numba); loads it meanwhile."""
        self.start(key)
        self.settle()
        return self.ready(key)

    def load(self):
        """The dispatchers (None without Numba), once Numba is imported; loads no signature's code."""
        if not self.made.is_set():
            self.start()
            self.made.wait()
        return self.kernels

    def loading(self) -> bool:
        """Whether the thread is running."""
        thread = self.thread
        return thread is not None and thread.is_alive()

    def settle(self, timeout=None):
        """Wait for the thread to finish its queue (at most ``timeout`` seconds)."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            thread = self.thread
            if thread is None or thread is threading.current_thread():
                return
            thread.join(None if end is None else max(0.0, end - time.monotonic()))
            if thread.is_alive():  # timed out
                return

    def _run(self):
        if not self.made.is_set():
            try:
                self.kernels = self._make()
            except ImportError as exc:  # no Numba: callers take their path without it
                self.error = exc
            except Exception as exc:  # noqa: BLE001 - a broken Numba: said once, then run without it
                self.error = exc
                warnings.warn(f"convmat.{self.name}: Numba failed to load ({exc!r}); running without it",
                              RuntimeWarning, stacklevel=2)
            finally:
                self.made.set()
        while True:
            with self._lock:
                if self.kernels is None or not self.queue:
                    self.queue.clear()
                    self.thread = None
                    return
                key = self.queue[0]
            try:
                self._warm(self.kernels, key)
                error = None
            except Exception as exc:  # noqa: BLE001 - never ready: callers go on without it
                error = exc
            with self._lock:
                if error is None:
                    self.warm.add(key)
                else:
                    self.failed[key] = error
                self.queue.pop(0)

    def _after_fork_in_child(self):
        self._lock = threading.Lock()
        self.thread = None
        self.queue.clear()
        if not self.made.is_set():  # the parent's thread does not exist here: start again
            self.made = threading.Event()


def _before_fork():
    # A child forked while a loader imports Numba or compiles would inherit import and compiler
    # locks held by a thread it does not have: let the loaders finish first (they run only in the
    # first moments of a process, or after a new signature).
    for loader in list(_LOADERS):
        loader.settle()


def _after_fork_in_child():
    for loader in list(_LOADERS):
        loader._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
