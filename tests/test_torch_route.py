"""Small CPU problems in torch tensors go through NumPy views of them
(``optnet/backends/_torch_via_numpy.py``): the same answers, statuses and derivatives as
the torch backend's own iteration, and the route taken exactly where it should be.
(tests/test_torch.py runs the adapter's whole suite on both paths.)"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import optnet  # noqa: E402
from optnet.backends import _torch_via_numpy  # noqa: E402

ot = optnet.torch
SOLVED = int(optnet.Status.SOLVED)
F64 = torch.float64

def _route_calls(monkeypatch):
    """A list that records each solve the NumPy route takes."""
    calls = []
    back = _torch_via_numpy._back

    def spy(sol):
        calls.append(sol)
        return back(sol)

    monkeypatch.setattr(_torch_via_numpy, "_back", spy)
    return calls


def _mixed_batch(dtype=F64, seed=3):
    """A batch with equalities and inequalities whose last lane is infeasible (b out of
    reach of A x = b with the bounds), as tensors that require gradients."""
    rng = np.random.default_rng(seed)
    B, n, m, p = 4, 6, 2, 12
    L = rng.normal(size=(B, n, n))
    Q = L @ np.swapaxes(L, -1, -2) + 0.1 * np.eye(n)
    q = rng.normal(size=(B, n))
    G = np.concatenate([np.eye(n), -np.eye(n)])          # |x| <= 1
    h = np.ones(p)
    A = rng.normal(size=(B, m, n))
    x0 = rng.uniform(-0.5, 0.5, size=(B, n))
    b = np.einsum("bmn,bn->bm", A, x0)
    b[-1] = 1e3                                    # |x| <= 1 cannot reach it
    return [torch.tensor(a, dtype=dtype, requires_grad=True) for a in (Q, q, G, h, A, b)]


@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_numpy_route_equals_the_torch_iteration(monkeypatch, dtype):
    """The routed solve, its gradients and its forward-mode derivatives: those of the
    torch backend's own iteration (to rounding), statuses equal, NaN in the same places."""
    def run(max_entries):
        monkeypatch.setattr(_torch_via_numpy, "NUMPY_MAX_ENTRIES", max_entries)
        args = _mixed_batch(dtype)
        x, z, y, st = ot.solve(*args, duals=True, status=True)
        w = torch.linspace(0.5, 1.5, x.shape[-1], dtype=dtype)
        ok = st == SOLVED
        loss = (torch.where(ok[:, None], x, 0.0) * w).sum() + torch.where(
            ok[:, None], z, 0.0).sum()
        grads = torch.autograd.grad(loss, args)
        tangents = [torch.ones_like(a) * 1e-2 for a in args]
        _, dx = torch.func.jvp(lambda *a: ot.solve(*a), tuple(a.detach() for a in args),
                               tuple(tangents))
        return x.detach(), z.detach(), y.detach(), st, grads, dx

    calls = _route_calls(monkeypatch)
    routed = run(_torch_via_numpy.NUMPY_MAX_ENTRIES)
    assert len(calls) == 2                    # the solve, and the solve under jvp
    native = run(0)
    assert len(calls) == 2                    # the native path did not route
    assert torch.equal(routed[3], native[3])
    assert routed[3].tolist() == [SOLVED] * 3 + [int(optnet.Status.PRIMAL_INFEASIBLE)]
    tol = 1e-9 if dtype == F64 else 2e-5
    for r, nat in zip(routed[:3] + (routed[5],), native[:3] + (native[5],)):
        assert r.dtype == dtype and r.shape == nat.shape
        assert torch.equal(torch.isnan(r), torch.isnan(nat))
        # The infeasible lane's duals are a certificate, which is not unique: the solved
        # lanes are compared.
        torch.testing.assert_close(r[:3], nat[:3], rtol=tol, atol=tol)
    assert torch.isnan(routed[0][3]).all()
    for r, nat in zip(routed[4], native[4]):
        assert r.dtype == dtype
        torch.testing.assert_close(r, nat, rtol=10 * tol, atol=10 * tol)


def test_what_the_numpy_route_takes(monkeypatch):
    """Small plain CPU float tensors go through NumPy; problems above the size limit, and
    tensors inside a torch.func transform, stay on the torch path; results agree."""
    calls = _route_calls(monkeypatch)
    args = [a.detach() for a in _mixed_batch()]
    ot.solve(*args)
    assert len(calls) == 1
    monkeypatch.setattr(_torch_via_numpy, "NUMPY_MAX_ENTRIES", 4 * (6 + 12 + 2) * 6 - 1)
    ot.solve(*args)                           # one entry too many: the torch path
    assert len(calls) == 1
    monkeypatch.setattr(_torch_via_numpy, "NUMPY_MAX_ENTRIES", 4 * (6 + 12 + 2) * 6)
    ot.solve(*args)
    assert len(calls) == 2
    # Under vmap the tensors are wrapped: the torch path (here, its error for an
    # autograd.Function without a vmap rule, the same as before the route existed).
    vmapped = None
    try:
        vmapped = torch.func.vmap(lambda q: ot.solve(args[0][0], q, args[2], args[3]))(args[1])
    except Exception:  # noqa: BLE001 - whatever torch says, the route was not taken
        pass
    assert len(calls) == 2, vmapped
