"""The lane-by-lane LAPACK Cholesky of the NumPy and PyTorch CPU backends (``_lapack``).

It is used from ``_lapack.MIN_SIZE`` variables on, which most other tests stay
below: here the factor itself is checked against NumPy's, failures and skipped
lanes against the ``Ops`` contract, and whole solves at n >= MIN_SIZE against
the frameworks' own batched Cholesky (``MIN_SIZE`` raised) and a reference solver.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import reference_solve

import optnet
from optnet.backends import _lapack

# The torch solves here test the torch iteration itself (see conftest.torch_native).
pytestmark = pytest.mark.usefixtures("torch_native")

SHIFTS = (1e-15, 1e-12, 1e-9, 1e-6)


def _spd_batch(rng, B, k, dtype):
    A = rng.standard_normal((B, k, k))
    return (A @ np.swapaxes(A, -1, -2) / k + np.eye(k)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("invert", [False, True])
@pytest.mark.parametrize("overwrite", [False, True])
def test_factor_lanes_matches_numpy(dtype, invert, overwrite):
    rng = np.random.default_rng(0)
    k = _lapack.MIN_SIZE + 8
    H0 = _spd_batch(rng, 5, k, dtype)
    H = H0.copy()
    scale = rng.uniform(0.5, 2.0, (5, k)).astype(dtype)
    U, ok = _lapack.factor_lanes(H, SHIFTS, scale, np.zeros(5, bool), invert=invert,
                                 overwrite=overwrite)
    assert ok.all()
    if not overwrite:
        assert np.array_equal(H, H0)                  # the input is not written
    elif not invert:
        assert U is H                                 # factored in place
    H = H0
    shifted = H.astype(np.float64) + SHIFTS[0] * np.einsum("bi,ij->bij", scale, np.eye(k))
    L = np.linalg.cholesky(shifted)
    got = np.swapaxes(np.triu(U), -1, -2).astype(np.float64)
    want = np.linalg.inv(L) if invert else L
    tol = 1e-12 if dtype == np.float64 else 2e-4
    assert np.max(np.abs(got - want)) <= tol * np.max(np.abs(want))
    if invert:                                         # zeros below the diagonal
        assert not np.any(np.tril(U, -1))


@pytest.mark.parametrize("overwrite", [False, True])
def test_factor_lanes_failures_and_skips(overwrite):
    rng = np.random.default_rng(1)
    k = _lapack.MIN_SIZE
    H = _spd_batch(rng, 6, k, np.float64)
    H[1] = -np.eye(k)                  # negative definite: every shift fails
    H[2, 3, 3] = np.nan                # not finite
    H[3] = np.ones((k, k))             # rank one: needs a larger shift
    H[4] = -np.eye(k)                  # skipped: never factored
    skip = np.array([False, False, False, False, True, False])
    U, ok = _lapack.factor_lanes(H.copy(), SHIFTS, np.ones((6, k)), skip, overwrite=overwrite)
    assert ok.tolist() == [True, False, False, True, True, True]
    eye = np.eye(k)
    for i in (1, 2, 4):
        assert np.array_equal(U[i], eye)
    L3 = np.swapaxes(np.triu(U[3]), -1, -2)
    # Some shift above the first was needed, and the factor is that of H + shift I.
    shift = np.max(np.abs(L3 @ L3.T - H[3]))
    assert SHIFTS[0] < shift <= 1.01 * SHIFTS[-1]


def test_supported_sizes_and_dtypes():
    assert _lapack.supported(np.float64, _lapack.MIN_SIZE)
    assert _lapack.supported(np.float32, 500)
    assert not _lapack.supported(np.float64, _lapack.MIN_SIZE - 1)
    assert not _lapack.supported(np.float16, 100)
    assert not _lapack.supported(np.complex128, 100)


def _problem(seed, B, n, p, m, dtype=np.float64):
    rng = np.random.default_rng(seed)
    U = rng.uniform(size=(B, n, n))
    Q = np.swapaxes(U, -1, -2) @ U / n + 1e-3 * np.eye(n)
    G = rng.standard_normal((B, p, n))
    z0 = rng.standard_normal((B, n))
    h = np.einsum("bpn,bn->bp", G, z0) + rng.uniform(size=(B, p))
    A = rng.standard_normal((B, m, n))
    b = np.einsum("bmn,bn->bm", A, z0)
    q = rng.standard_normal((B, n))
    return {k: v.astype(dtype) for k, v in dict(Q=Q, q=q, G=G, h=h, A=A, b=b).items()}


def _solve(backend, P):
    if backend == "torch":
        torch = pytest.importorskip("torch")
        sol = optnet.solve(**{k: torch.from_numpy(v) for k, v in P.items()}, backend="torch")
        return np.asarray(sol.x), np.asarray(sol.status)
    sol = optnet.solve(**P, backend=backend)
    return np.asarray(sol.x), np.asarray(sol.status)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_solves_with_lapack_match_framework_cholesky(backend, monkeypatch):
    """n = 40 (LAPACK path) against the same solve with MIN_SIZE raised (the framework's
    batched Cholesky), and against the reference solver."""
    P = _problem(3, 6, 40, 50, 5)
    x, status = _solve(backend, P)
    monkeypatch.setattr(_lapack, "MIN_SIZE", 10**6)
    x_fw, status_fw = _solve(backend, P)
    assert (status == 0).all() and (status_fw == 0).all()
    assert np.max(np.abs(x - x_fw)) <= 1e-9 * max(1.0, np.max(np.abs(x_fw)))
    for i in range(P["Q"].shape[0]):
        ref = reference_solve(*(P[k][i] for k in ("Q", "q", "G", "h", "A", "b")))
        assert np.max(np.abs(x[i] - ref.x)) <= 1e-6 * max(1.0, np.max(np.abs(ref.x)))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_float32_solves_with_lapack(backend):
    P = _problem(4, 4, 36, 36, 0)
    P = {k: v for k, v in P.items() if k not in ("A", "b")}
    x64, _ = _solve(backend, P)
    x32, status = _solve(backend, {k: v.astype(np.float32) for k, v in P.items()})
    assert (status == 0).all()
    assert np.max(np.abs(x32 - x64)) <= 1e-4 * max(1.0, np.max(np.abs(x64)))
