"""Writing lanes back (``_lanes.put_state``), and the polish's swapped lanes merged into
the batch's active-set system, which the derivatives reuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from strategies import paper_problem

import optnet
from optnet import _lanes, _polish
from optnet.backends import numpy as numpy_backend
from optnet.backends import torch as torch_backend

# The torch solves here test the torch iteration itself (see conftest.torch_native).
pytestmark = pytest.mark.usefixtures("torch_native")

BACKENDS = {
    "numpy": (numpy_backend, np.asarray),
    "torch": (torch_backend, torch.as_tensor),
}


def _host(a):
    return a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


@pytest.mark.parametrize("name", list(BACKENDS))
@pytest.mark.parametrize("inplace", [False, True], ids=["copy", "inplace"])
def test_put_state_writes_the_lanes(name, inplace):
    """Lanes ``idx`` of every lane array come from ``part``, the others from ``full``;
    ``full`` is left alone unless ``inplace``, and then its big arrays are written
    themselves (the 2-d ones always go through a selection)."""
    mod, conv = BACKENDS[name]
    xp = mod.namespace
    rng = np.random.default_rng(0)
    B = 6
    full_np = (rng.standard_normal((B, 3, 4)), rng.standard_normal((B, 5)))
    part_np = (rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5)))
    full = tuple(conv(a.copy()) for a in full_np)
    part = tuple(conv(a) for a in part_np)
    idx = conv(np.array([1, 4]))
    with torch.no_grad():      # (torch writes in place only where autograd records nothing)
        out = _lanes.put_state(xp, full, part, idx, B, mod.ops, inplace=inplace)
    for o, f, p in zip(out, full_np, part_np):
        want = f.copy()
        want[[1, 4]] = p
        np.testing.assert_array_equal(_host(o), want)
    # The 3-d array: written in place exactly when asked; the 2-d one never.
    assert (_host(full[0]) == _host(out[0])).all() == inplace
    np.testing.assert_array_equal(_host(full[1]), full_np[1])


def test_put_state_inplace_copies_where_autograd_records():
    """torch with grad mode on: the arrays may be in a graph, so they are copied."""
    full = torch.zeros((3, 2, 2))
    part = torch.ones((1, 2, 2))
    (out,) = _lanes.put_state(torch_backend.namespace, (full,), (part,), torch.tensor([1]), 3,
                              torch_backend.ops, inplace=True)
    assert float(out[1].sum()) == 4.0 and float(full.abs().sum()) == 0.0


@pytest.mark.parametrize("name", list(BACKENDS))
def test_put_state_inplace_copies_a_broadcast_array(name):
    """A broadcast (or read-only) ``full`` cannot be written: it is copied, and stays as it was."""
    mod, conv = BACKENDS[name]
    xp = mod.namespace
    B = 4
    base = conv(np.arange(12.0).reshape(1, 3, 4))
    full = xp.broadcast_to(base, (B, 3, 4))
    part = conv(np.full((1, 3, 4), -1.0))
    idx = conv(np.array([2]))
    with torch.no_grad():
        (out,) = _lanes.put_state(xp, (full,), (part,), idx, B, mod.ops, inplace=True)
    assert float(_host(out)[2, 0, 0]) == -1.0 and float(_host(out)[1, 0, 0]) == 0.0
    np.testing.assert_array_equal(_host(base), np.arange(12.0).reshape(1, 3, 4))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_swapped_lanes_merged_system_gives_each_lanes_derivatives(monkeypatch, backend):
    """On a batch where the polish swaps rows of some lanes (their first active-set guess
    was wrong), the merged system (written in place) gives every lane the derivatives it
    gets when solved alone. (A lane written with another lane's factor, or left with its
    first guess's, has other derivatives.)"""
    swapped = []
    swaps = _polish._swaps

    def spy(xp, ops, prob, cfg, pt, solved, rescue, system, att, done, *rest):
        swapped.append(int(np.sum(_host((solved | rescue) & ~done))))
        return swaps(xp, ops, prob, cfg, pt, solved, rescue, system, att, done, *rest)

    monkeypatch.setattr(_polish, "_swaps", spy)
    B, n = 24, 40
    d = paper_problem(np.random.default_rng(3), B, n, n)
    Q, q, G, h = d["Q"], d["q"], d["G"], d["h"]
    conv = BACKENDS[backend][1]
    with torch.no_grad():      # (as in optnet.torch.solve's forward: the in-place merge)
        sol = optnet.solve(conv(Q), conv(q), conv(G), conv(h), backend=backend)
    assert swapped and 0 < swapped[0] < B, swapped       # the path under test was taken
    assert (_host(sol.status) == int(optnet.Status.SOLVED)).all()
    rng = np.random.default_rng(7)
    dx = rng.standard_normal((B, n))
    g = optnet.vjp(sol, conv(dx))
    for i in range(B):
        alone = optnet.solve(conv(Q[i]), conv(q[i]), conv(G[i]), conv(h[i]), backend=backend)
        gi = optnet.vjp(alone, conv(dx[i]))
        for k in ("Q", "q", "G", "h"):
            got, want = _host(getattr(g, k))[i], _host(getattr(gi, k))
            assert np.max(np.abs(got - want)) <= 1e-8 * max(1.0, np.max(np.abs(want))), (i, k)


def test_torch_gradients_on_a_batch_with_swapped_lanes():
    """On the batch with swapped lanes: ``optnet.torch.solve`` (its forward merges the
    swapped lanes in place, autograd recording nothing) gives the gradient of sum(x) the
    functional adjoint gives; ``optnet.solve`` records nothing (differentiating through
    its iterations gave gradients off by 1e11 here), so its x has no graph."""
    B, n = 24, 40
    d = paper_problem(np.random.default_rng(3), B, n, n)
    t = {k: torch.as_tensor(d[k]) for k in ("Q", "q", "G", "h")}
    q = t["q"].clone().requires_grad_()
    optnet.torch.solve(t["Q"], q, t["G"], t["h"]).sum().backward()
    sol = optnet.solve(t["Q"], q, t["G"], t["h"], backend="torch")
    assert sol.x.grad_fn is None and not sol.x.requires_grad
    ref = optnet.vjp(sol, torch.ones((B, n), dtype=torch.float64))
    np.testing.assert_allclose(q.grad.numpy(), _host(ref.q), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_inputs_are_never_written(backend):
    """The solver works on the caller's arrays without copying them where their dtype is
    already the iteration's: none is written, through the in-place Cholesky of temporaries,
    the in-place merge of swapped lanes, equilibration or the derivatives (badly scaled
    lanes, which are equilibrated and resume after a missed early polish, with paper-batch
    lanes whose polish swaps rows)."""
    from hard_qps import hard_batch

    conv = BACKENDS[backend][1]
    hard = hard_batch("badly_scaled", 0, 4)
    n, p, m = hard["q"].shape[-1], hard["G"].shape[-2], hard["A"].shape[-2]
    paper = paper_problem(np.random.default_rng(3), 12, n, p)
    rng = np.random.default_rng(1)
    data = {k: np.concatenate([hard[k], paper[k]]) for k in ("Q", "q", "G", "h")}
    data["A"] = np.concatenate([hard["A"], rng.standard_normal((12, m, n))])
    x0 = rng.standard_normal((12, n))
    data["b"] = np.concatenate([hard["b"], np.einsum("bmn,bn->bm", data["A"][4:], x0)])
    paper_h = np.einsum("bpn,bn->bp", data["G"][4:], x0) + rng.uniform(size=(12, p))
    data["h"] = np.concatenate([hard["h"], paper_h])
    before = {k: v.copy() for k, v in data.items()}
    args = {k: conv(v) for k, v in data.items()}
    with torch.no_grad():
        sol = optnet.solve(**args, backend=backend)
    assert (_host(sol.status) == int(optnet.Status.SOLVED)).all(), _host(sol.status)
    optnet.vjp(sol, conv(np.ones((16, n))))
    optnet.jvp(sol, **{"d" + k: conv(np.ones_like(v)) for k, v in data.items()})
    for k, v in args.items():
        np.testing.assert_array_equal(_host(v), before[k], err_msg=k)
