"""Skips belong to the single test that needs a missing library, never to a whole module.

The check runs a few tests of ``test_operator.py`` in a fresh interpreter in
which ``import torch`` fails as it does where PyTorch is not installed (a
meta-path finder raises ModuleNotFoundError; ``torch`` is never loaded): the
torch-free tests must pass, the torch ones must be skipped with the reason, and
nothing may error.
"""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: Runs pytest with the arguments given, in an interpreter where PyTorch cannot be imported.
_WITHOUT_TORCH = """
import sys


class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NoTorch())
import pytest

code = pytest.main(sys.argv[1:])
assert "torch" not in sys.modules, "torch was imported after all"
sys.exit(code)
"""

#: Two torch-free tests and two that need PyTorch (all quick).
_SELECTED = "bad_inputs or repr_names or reflect_adjoint_folds or torch_parameters_are_accepted"


def _outcomes(summary: str) -> dict:
    """pytest's last line ('2 passed, 2 skipped in 0.5s') as {'passed': 2, 'skipped': 2}."""
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|skipped|failed|errors?|deselected)", summary)}


def test_operator_tests_run_without_torch():
    args = ["tests/test_operator.py", "-q", "-rs", "-p", "no:cacheprovider", "-k", _SELECTED]
    out = subprocess.run([sys.executable, "-c", _WITHOUT_TORCH, *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    report = out.stdout + out.stderr
    assert out.returncode == 0, report
    counts = _outcomes(out.stdout.strip().splitlines()[-1])
    assert counts.get("passed") == 2 and counts.get("skipped") == 2, report
    assert not counts.get("failed") and not counts.get("error") and not counts.get("errors"), report
    assert report.count("PyTorch is not installed") == 2, report  # each skip says why
