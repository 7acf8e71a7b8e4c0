"""Shared test configuration: one seeded, bounded hypothesis profile and a seeded RNG.

Every property test in this suite is derandomized (hypothesis derives its
examples from the test's name, so a run is reproducible) and has no deadline
(the machine is shared; tests never assert timings).  Tests pick their own
``max_examples`` to stay small.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "convmat",
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=(HealthCheck.too_slow,),
)
settings.load_profile("convmat")

#: The seed of every numpy Generator in the suite (change it to re-roll the data, never remove it).
SEED = 20240229


@pytest.fixture
def rng():
    """A numpy Generator with a fixed seed (a fresh one per test)."""
    return np.random.default_rng(SEED)


@pytest.fixture(scope="session")
def torch():
    """The ``torch`` module; the test that takes it is skipped, with the reason, where PyTorch is missing.

    Session-scoped so that hypothesis tests can take it (a function-scoped
    fixture would be shared across their examples).  Tests that need PyTorch
    take this fixture instead of a module-level ``importorskip``, so that the
    torch-free tests of the same module still run without it.
    """
    return pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'convmat[torch]')")
