"""The backends agree on the hard classes (:mod:`hard_qps`): the same status and the same
solution to 1e-8 (relative to ``max(1, |x|)``), NumPy against PyTorch and against JAX
(float64) on every class (JAX compiles one program per class: about 10 s each).

The measured agreement is far tighter (1e-11 at worst, on badly_scaled); 1e-8 leaves
room for the machine's BLAS while still catching a backend that takes another path.
"""

from __future__ import annotations

import numpy as np
import pytest
from hard_qps import CLASSES, hard_problem

import optnet

# The torch solves here test the torch iteration itself (see conftest.torch_native).
pytestmark = pytest.mark.usefixtures("torch_native")

TOL = 1e-8


def _solve(problem, backend):
    sol = optnet.solve(**problem, backend=backend)
    return int(np.asarray(sol.status)), np.asarray(sol.x, dtype=np.float64)


def _assert_agree(problem, backend):
    status, x = _solve(problem, "numpy")
    other_status, other_x = _solve(problem, backend)
    assert status == other_status == int(optnet.Status.SOLVED), (status, other_status)
    err = np.max(np.abs(other_x - x)) / max(1.0, np.max(np.abs(x)))
    assert err <= TOL, err


@pytest.mark.parametrize("name", list(CLASSES))
def test_torch_agrees_with_numpy(name):
    pytest.importorskip("torch")
    _assert_agree(hard_problem(name, 0), "torch")


@pytest.mark.parametrize("name", list(CLASSES))
def test_jax_agrees_with_numpy(name):
    jax = pytest.importorskip("jax")
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        _assert_agree(hard_problem(name, 0), "jax")
    finally:
        jax.config.update("jax_enable_x64", before)
