"""Shared fixtures and settings of the optnet test suite.

* Makes the repository root (the ``optnet`` package) and this directory (the
  helper modules ``reference`` and ``strategies``) importable without
  installing anything.
* ``backend``: the array backends every core test runs on.
* ``to_numpy``: convert any result array back to NumPy.
* ``torch_native``: the torch backend's own iteration even for small CPU problems.
* ``diagonal_factorizations``: the calls of the structured (diagonal ``H``) factorization.
* The ``slow`` marker and the hypothesis profiles (``ci``, the default, is
  derandomized so that CI runs are reproducible; ``HYPOTHESIS_PROFILE=dev``
  draws fresh examples, ``HYPOTHESIS_PROFILE=thorough`` ten times as many).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

_HERE = Path(__file__).resolve().parent
for _path in (_HERE.parent, _HERE):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

# "array_api_strict-lockstep": the bare standard with its ops marked not eager, so that the
# core takes the traced path (``ops.while_loop``, ``ops.cond``, no lane compaction, no
# host-side choices) that JAX compiles: a fast check of that path without a compiler.
BACKENDS = ("numpy", "array_api_strict", "array_api_strict-lockstep")

settings.register_profile(
    "ci",
    max_examples=30,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "dev",
    max_examples=30,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "thorough",
    max_examples=300,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def n_examples(base: int) -> int:
    """Scale a per-test example count with the loaded hypothesis profile.

    Parameters
    ----------
    base : int
        The number of examples under the default profile (30 examples).

    Returns
    -------
    int
        ``base`` times the loaded profile's ``max_examples`` / 30 (at least 1).
    """
    return max(1, round(base * settings.default.max_examples / 30))


def pytest_configure(config):
    """Register the markers of the suite."""
    config.addinivalue_line(
        "markers", "slow: long-running tests (deselect with -m 'not slow')"
    )


@pytest.fixture(params=BACKENDS, ids=BACKENDS)
def backend(request, monkeypatch):
    """The name of an array backend of ``optnet.solve`` (for the lockstep variant,
    "array_api_strict" with its ops marked not eager for the test's duration)."""
    name = request.param
    if name.endswith("-lockstep"):
        name = name.removesuffix("-lockstep")
        mod = importlib.import_module(f"optnet.backends.{name}")
        monkeypatch.setattr(mod, "ops", mod.ops._replace(eager=False))
    return name


@pytest.fixture
def torch_native(monkeypatch):
    """The torch backend's own iteration for a test's torch solves, whatever their size
    (by default small CPU problems go through NumPy views: ``_torch_via_numpy``). Files
    that test the torch iteration itself (its host reads, kernels, lane compaction, mixed
    precision, rounding on hard classes) use it, so that they test the path CUDA tensors
    take."""
    try:
        from optnet.backends import _torch_via_numpy
    except ImportError:       # no torch: nothing to route
        return
    monkeypatch.setattr(_torch_via_numpy, "NUMPY_MAX_ENTRIES", 0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module's small training runs (on a shared machine more
    threads mostly wait on each other); restored afterwards for the rest of the suite."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def count_calls(monkeypatch, module, name: str) -> list:
    """Replace ``module.name`` (through ``monkeypatch`` or its ``context()``) by itself
    counted: the returned list grows by one at every call (or trace)."""
    calls = []
    inner = getattr(module, name)

    def counted(*args, **kw):
        calls.append(1)
        return inner(*args, **kw)

    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.fixture
def diagonal_factorizations(monkeypatch):
    """The calls (or traces) of ``_kkt._factor_diagonal``, the interior point's
    factorization of a diagonal ``H``: whether a solve took the structured path (bounds
    and a diagonal ``Q``)."""
    from optnet import _kkt

    return count_calls(monkeypatch, _kkt, "_factor_diagonal")


def patch_settings(monkeypatch, **changes):
    """Every solve from now on (until ``monkeypatch`` undoes it) runs with these
    ``Settings`` fields changed, e.g. ``mixed_min_n=10**9`` for no mixed-precision start."""
    from optnet import _pdipm

    made = _pdipm.default_settings
    monkeypatch.setattr(_pdipm, "default_settings",
                        lambda *a, **kw: made(*a, **kw)._replace(**changes))


def to_numpy(a):
    """Convert an array of any supported library to a NumPy array.

    Parameters
    ----------
    a : array or None
        A NumPy or array-api-strict array (or anything ``np.asarray`` accepts).

    Returns
    -------
    numpy.ndarray or None
        ``None`` if ``a`` is ``None``; otherwise a NumPy array with the same
        shape, dtype and values.
    """
    if a is None:
        return None
    if isinstance(a, np.ndarray):
        return a
    try:
        return np.from_dlpack(a)
    except Exception:  # objects without the DLPack protocol
        return np.asarray(a)
