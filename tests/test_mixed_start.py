"""Mixed-precision start of float64 problems (``_pdipm.iteration_problem``).

float64 problems of ``Settings.mixed_min_n`` or more variables on NumPy and PyTorch's CPU start
their interior-point iterations with float32 factors and climb to float64 factors
(the driver's precision level, ``_pdipm.run``); these tests check when that path is
taken, that it is taken, and that its answers are those of the float64 path and of the
reference solver.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import patch_settings
from reference import reference_solve
from strategies import paper_problem

import optnet
from optnet import _kkt, _pdipm
from optnet._problem import canonicalize
from optnet.backends import array_api_strict as strict_backend
from optnet.backends import numpy as numpy_backend

# The torch solves here test the torch iteration itself (see conftest.torch_native).
pytestmark = pytest.mark.usefixtures("torch_native")

xp, ops = numpy_backend.namespace, numpy_backend.ops
N = 64          # the default Settings.mixed_min_n (checked below)


def _prob(data, xp_=xp):
    return canonicalize(xp_, *(None if data[k] is None else xp_.asarray(data[k])
                               for k in ("Q", "q", "G", "h", "A", "b")))


def _paper(batch, n, seed=0):
    return paper_problem(np.random.default_rng(seed), batch, n=n, p=n)


def _iteration_problem(ops_, prob):
    return _pdipm.iteration_problem(xp, ops_, prob, _pdipm.default_settings(xp, prob))


def test_default_threshold():
    assert _pdipm.default_settings(xp, _prob(_paper(1, 8))).mixed_min_n == N


def test_taken_from_mixed_min_n_variables():
    assert _iteration_problem(ops, _prob(_paper(2, N))).factor_dtype == np.float32
    assert _iteration_problem(ops, _prob(_paper(2, N - 1))).factor_dtype \
        == np.float64


@pytest.mark.parametrize("key, factor", [("Q", 1e11), ("G", 1e-12), ("h", 1e11), ("q", 1e11)])
def test_not_taken_outside_float32s_comfortable_range(key, factor):
    """One lane whose data leave Settings.mixed_range keeps the whole batch in float64."""
    data = _paper(3, N)
    data[key] = data[key].copy()
    data[key][1] *= factor
    if key == "G":     # a lane whose matrices are all tiny
        data["Q"] = data["Q"].copy()
        data["Q"][1] *= factor
    assert _iteration_problem(ops, _prob(data)).factor_dtype == np.float64
    assert _iteration_problem(ops, _prob(_paper(3, N))).factor_dtype == np.float32


def test_bad_lanes_do_not_decide():
    """A lane with NaN data (set aside, never iterated) does not keep the others in float64."""
    data = _paper(3, N)
    data["Q"] = data["Q"].copy()
    data["Q"][2, 0, 0] = np.nan
    prob = _prob(data)
    assert bool(prob.bad[2])
    assert _iteration_problem(ops, prob).factor_dtype == np.float32


def test_not_taken_without_the_backends_consent():
    """Backends without ``narrow_factors`` (array-api-strict, JAX) and float32 problems
    (already mixed) keep their factor dtype; traced backends get the problem as it is."""
    prob = _prob(_paper(2, N))

    def kept(ops_, p):
        return _iteration_problem(ops_, p).factor_dtype == p.factor_dtype

    assert kept(ops._replace(narrow_factors=None), prob)
    assert _iteration_problem(ops._replace(eager=False), prob) is prob
    assert kept(ops._replace(narrow_factors=lambda d: False), prob)
    assert strict_backend.ops.narrow_factors is None
    p32 = _prob({k: None if v is None else v.astype(np.float32)
                 for k, v in _paper(2, N).items()})
    assert kept(ops, p32)
    assert _iteration_problem(ops, prob).factor_dtype == np.float32     # (and else taken)


def test_torch_consents_on_cpu_only():
    torch_backend = pytest.importorskip("optnet.backends.torch")
    import torch

    assert torch_backend.ops.narrow_factors(torch.device("cpu"))
    assert not torch_backend.ops.narrow_factors(torch.device("cuda"))
    assert not torch_backend.ops.narrow_factors(torch.device("meta"))


def _factor_dtypes(monkeypatch):
    """The factor dtypes of the interior point's factorizations, in order."""
    seen = []
    inner = _kkt._factor

    def spy(xp_, ops_, prob, w, delta, skip, factor_dtype, *rest):
        seen.append(np.dtype(factor_dtype))
        return inner(xp_, ops_, prob, w, delta, skip, factor_dtype, *rest)

    monkeypatch.setattr(_kkt, "_factor", spy)
    return seen


def test_starts_in_float32_and_climbs(monkeypatch):
    """On the paper's problems the first factorizations are float32 and the last
    interior-point ones float64 (the polish, also float64, comes after)."""
    data = _paper(4, 80)
    seen = _factor_dtypes(monkeypatch)
    st, level = _pdipm.run(xp, ops, _prob(data), _pdipm.default_settings(xp, _prob(data)))
    assert seen[0] == np.float32 and seen[1] == np.float32
    assert seen[-1] == np.float64
    assert int(level) >= 1
    assert np.all(np.asarray(st.status) == int(optnet.Status.SOLVED))


def _solve_both(monkeypatch, data):
    mixed = optnet.solve(*(data[k] for k in ("Q", "q", "G", "h", "A", "b")))
    with monkeypatch.context() as m:
        patch_settings(m, mixed_min_n=10**9)
        plain = optnet.solve(*(data[k] for k in ("Q", "q", "G", "h", "A", "b")))
    return mixed, plain


def test_answers_equal_the_float64_paths_and_the_reference(monkeypatch):
    data = _paper(6, 80, seed=3)
    mixed, plain = _solve_both(monkeypatch, data)
    assert np.all(mixed.status == int(optnet.Status.SOLVED))
    assert np.all(plain.status == int(optnet.Status.SOLVED))
    assert np.max(np.abs(mixed.x - plain.x)) <= 1e-9 * max(1.0, np.max(np.abs(plain.x)))
    assert np.max(np.abs(mixed.z - plain.z)) <= 1e-9 * max(1.0, np.max(np.abs(plain.z)))
    assert np.max(mixed.primal_residual) <= 1e-10 and np.max(mixed.dual_residual) <= 1e-9
    for i in range(2):
        ref = reference_solve(data["Q"][i], data["q"][i], data["G"][i], data["h"][i])
        assert np.max(np.abs(mixed.x[i] - ref.x)) <= 1e-7 * max(1.0, np.max(np.abs(ref.x)))
    # The derivatives (float64 polish system either way) agree too.
    gm = optnet.vjp(mixed, np.ones_like(mixed.x))
    gp = optnet.vjp(plain, np.ones_like(plain.x))
    for a, b in zip(gm, gp):
        if b is not None:
            assert np.max(np.abs(a - b)) <= 1e-7 * max(1.0, np.max(np.abs(b)))


def test_infeasible_and_unbounded_lanes_keep_their_status(monkeypatch):
    """A primal infeasible lane (contradictory rows) and an unbounded one (LP with a
    free descent direction) among paper problems: the same statuses as on the float64
    path, and the solved neighbours unchanged."""
    n = N
    data = _paper(3, n, seed=5)
    data = {k: None if v is None else v.copy() for k, v in data.items()}
    # Lane 1: rows 0 and 1 say g'x <= -1 and -g'x <= -1.
    data["G"][1, 1] = -data["G"][1, 0]
    data["h"][1, 0] = data["h"][1, 1] = -1.0
    # Lane 2: Q = 0 and only x_0 <= 1 bounds x_0 from above; q_0 = +1 makes -x_0 -> inf...
    data["Q"][2] = 0.0
    data["G"][2] = 0.0
    data["G"][2, 0, 0] = 1.0
    data["h"][2] = 1.0
    data["q"][2] = 0.0
    data["q"][2, 0] = 1.0       # minimize x_0 with only x_0 <= 1: unbounded below
    mixed, plain = _solve_both(monkeypatch, data)
    assert int(mixed.status[0]) == int(optnet.Status.SOLVED)
    assert int(mixed.status[1]) == int(optnet.Status.PRIMAL_INFEASIBLE)
    assert int(mixed.status[2]) == int(optnet.Status.DUAL_INFEASIBLE)
    assert np.array_equal(mixed.status, plain.status)
    assert np.max(np.abs(mixed.x[0] - plain.x[0])) <= 1e-9 * max(1.0, np.max(np.abs(plain.x[0])))
