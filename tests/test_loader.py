"""The background loader of Numba kernels (``convmat/_loader.py``), with stand-in families (no Numba needed).

The families that use it (the products' kernels, the compiled fill) are tested in
``test_spmm_twins.py``, ``test_spmm_native.py`` and ``test_fill.py``: fresh processes, Numba
blocked or broken, a fork while loading.
"""

from __future__ import annotations

import threading
import warnings

import pytest

from convmat._loader import Loader


def family(fail_make=None, fail_keys=(), gate=None):
    """A loader whose ``make`` returns a dict (or raises ``fail_make``) and whose ``warm`` records keys."""
    calls = {"make": 0, "warm": []}

    def make():
        calls["make"] += 1
        if gate is not None:
            gate.wait(5)
        if fail_make is not None:
            raise fail_make
        return {"kernel": "compiled"}

    def warm(kernels, key):
        assert kernels == {"kernel": "compiled"}
        if key in fail_keys:
            raise ValueError(f"no code for {key}")
        calls["warm"].append(key)

    return Loader("stand-in", make, warm), calls


def test_keys_load_in_order_on_one_thread_that_stops_when_done():
    gate = threading.Event()
    loader, calls = family(gate=gate)
    assert loader.ready("a") is None
    loader.start("a")
    loader.start("b")
    loader.start("a")  # queued once
    assert loader.loading() and loader.ready("a") is None  # never waits: the thread is held at make()
    gate.set()
    assert loader.wait("b") == {"kernel": "compiled"}
    loader.settle()
    assert not loader.loading() and loader.thread is None
    assert calls == {"make": 1, "warm": ["a", "b"]}
    assert loader.ready("a") == loader.ready("b") == {"kernel": "compiled"}
    loader.start("a")  # already loaded: nothing to do
    assert loader.thread is None and calls["warm"] == ["a", "b"]


def test_load_makes_the_kernels_without_warming_a_key():
    loader, calls = family()
    assert loader.load() == {"kernel": "compiled"}
    loader.settle()
    assert calls == {"make": 1, "warm": []} and loader.ready("a") is None


def test_without_numba_nothing_is_ever_ready_and_nothing_starts_again():
    loader, calls = family(fail_make=ImportError("no numba"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing Numba is not worth a warning
        assert loader.wait("a") is None and loader.load() is None
    assert isinstance(loader.error, ImportError)
    loader.start("b")
    assert loader.thread is None and calls["make"] == 1


def test_a_broken_numba_warns_once():
    loader, calls = family(fail_make=RuntimeError("broken"))
    with pytest.warns(RuntimeWarning, match=r"convmat.stand-in: Numba failed to load \(RuntimeError\('broken'\)\)"):
        assert loader.load() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert loader.wait("a") is None
    assert calls["make"] == 1


def test_a_key_whose_code_fails_is_never_ready_and_not_retried():
    loader, calls = family(fail_keys={"bad"})
    assert loader.wait("bad") is None
    assert isinstance(loader.failed["bad"], ValueError)
    assert loader.wait("good") == {"kernel": "compiled"}
    loader.start("bad")
    assert loader.thread is None and calls["warm"] == ["good"]


def test_settle_with_a_timeout_returns_while_the_thread_runs():
    gate = threading.Event()
    loader, _ = family(gate=gate)
    loader.start("a")
    loader.settle(timeout=0.05)
    assert loader.loading()
    gate.set()
    loader.settle()
    assert loader.ready("a") is not None
