"""The compiled paths of ``optnet.torch.solve``: ``compiled="jax"`` (XLA programs,
``optnet/adapters/torch_compiled.py``) and ``compiled="torch"`` (the iteration compiled
by ``torch.compile``, ``Ops.compile_step``): the same answers, statuses and derivatives
(backward and forward mode) as the default path, on a batch with an infeasible lane and a
shared (broadcast) constraint matrix; clear errors where a path does not apply; JAX's
global 64-bit setting left as it was.

Each new shape or option set compiles (seconds for JAX, about a minute for
``torch.compile`` on a CPU), so the tests share a few problems."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")

import optnet  # noqa: E402

ot = optnet.torch
SOLVED = int(optnet.Status.SOLVED)
F64 = torch.float64


def _batch(dtype=F64, seed=3, n=6):
    """Equalities and box inequalities, G and h shared by the batch; the last lane's
    equalities out of reach of the box (PRIMAL_INFEASIBLE)."""
    rng = np.random.default_rng(seed)
    B, m = 4, 2
    L = rng.normal(size=(B, n, n))
    Q = L @ np.swapaxes(L, -1, -2) + 0.1 * np.eye(n)
    q = rng.normal(size=(B, n))
    G = np.concatenate([np.eye(n), -np.eye(n)])          # |x| <= 1, shared
    h = np.ones(2 * n)
    A = rng.normal(size=(B, m, n))
    b = np.einsum("bmn,bn->bm", A, rng.uniform(-0.5, 0.5, size=(B, n)))
    b[-1] = 1e3
    return [torch.tensor(a, dtype=dtype, requires_grad=True) for a in (Q, q, G, h, A, b)]


def _loss(x, z, y, st):
    """A loss through x and both duals, over the solved lanes only (the infeasible lane's
    x is NaN; its gradient is zero on both paths)."""
    ok = (st == SOLVED)[:, None]
    w = torch.linspace(0.5, 1.5, x.shape[-1], dtype=x.dtype)
    return ((torch.where(ok, x, 0.0) * w).sum() + torch.where(ok, z, 0.0).square().sum()
            + torch.where(ok, y, 0.0).sum())


@pytest.mark.parametrize("dtype,kind", [(F64, "jax"), (torch.float32, "jax"), (F64, "torch")],
                         ids=["float64-jax", "float32-jax", "float64-torch"])
def test_compiled_equals_default_path(dtype, kind):
    """Solution, duals, statuses and the gradients of all six inputs (the shared G and h
    get the sum over the batch) equal the default path's; NaN in the same places. (The
    lanes finish at different iterations: the compiled iteration also runs on the
    compacted batch. For torch.compile, n = 36: factorizations of that size take another
    route when eager, LAPACK's, which the compiled iteration must not.)"""
    tol = {F64: 1e-8, torch.float32: 2e-4}[dtype]
    results = []
    for compiled in (False, kind):
        args = _batch(dtype, n=36 if kind == "torch" else 6)
        x, z, y, st = ot.solve(*args, duals=True, status=True, compiled=compiled)
        _loss(x, z, y, st).backward()
        results.append((x, z, y, st, [a.grad for a in args]))
    (x0, z0, y0, s0, g0), (x1, z1, y1, s1, g1) = results
    assert s1.dtype == torch.int32
    assert s0.tolist() == s1.tolist() == [SOLVED] * 3 + [int(optnet.Status.PRIMAL_INFEASIBLE)]
    for a, b in [(x0, x1), (z0, z1), (y0, y1)]:
        assert a.dtype == b.dtype == dtype and a.shape == b.shape
        assert torch.equal(torch.isnan(a), torch.isnan(b))
        assert torch.allclose(torch.nan_to_num(a), torch.nan_to_num(b), atol=tol, rtol=tol)
    for name, a, b in zip("QqGhAb", g0, g1):
        assert a.shape == b.shape, name
        assert torch.isfinite(b).all(), name
        assert torch.allclose(a, b, atol=tol, rtol=tol), (name, (a - b).abs().max())
    assert g1[0][-1].abs().max() == 0          # the infeasible lane: zero gradient


def test_compiled_torch_other_settings_and_warm_start():
    """torch.compile of the iteration with a tolerance of the user's (the settings are
    constants of the program: it compiles again) and with a warm start: the default
    path's answers and statuses."""
    args = [a.detach() for a in _batch(n=36)]
    for kw in ({"tol": 1e-7, "max_iter": 60}, {"init": {"x": torch.zeros(4, 36, dtype=F64)}}):
        x0, s0 = ot.solve(*args, status=True, **kw)
        x1, s1 = ot.solve(*args, status=True, compiled="torch", **kw)
        assert s0.tolist() == s1.tolist() == [SOLVED] * 3 + [int(optnet.Status.PRIMAL_INFEASIBLE)]
        assert torch.allclose(x0[:3], x1[:3], atol=1e-6, rtol=1e-6), kw


def test_compiled_torch_past_its_program_limit(monkeypatch):
    """Past ``STEP_VARIANTS`` programs the iteration runs eagerly, with one warning, and the
    answers are still the default path's (torch.compile alone would fail hard under
    ``fullgraph``)."""
    from optnet.backends import torch as torch_backend

    torch_backend.compile_step.cache_clear()
    monkeypatch.setattr(torch_backend, "STEP_VARIANTS", 1)
    try:
        with pytest.warns(RuntimeWarning, match="runs eagerly from now on"):
            for n in (5, 7):                   # two shapes: at least two programs
                args = [a.detach() for a in _batch(n=n)]
                x0, s0 = ot.solve(*args, status=True)
                x1, s1 = ot.solve(*args, status=True, compiled="torch")
                assert s0.tolist() == s1.tolist()
                assert torch.allclose(x0[:3], x1[:3], atol=1e-8, rtol=1e-8)
    finally:
        torch_backend.compile_step.cache_clear()     # a fresh compiler for later tests


def test_compiled_forward_mode_equals_default_path():
    """``torch.autograd.forward_ad`` through the compiled path: the default path's
    tangents of x and the duals, with tangents on some inputs only."""
    import torch.autograd.forward_ad as fwAD

    rng = np.random.default_rng(0)
    outs = []
    for compiled in (False, True):
        args = [a.detach() for a in _batch()]
        dirs = {0: rng.normal(size=args[0].shape), 1: rng.normal(size=args[1].shape),
                5: rng.normal(size=args[5].shape)}
        rng = np.random.default_rng(0)
        with fwAD.dual_level():
            duals = [fwAD.make_dual(a, torch.tensor(dirs[i])) if i in dirs else a
                     for i, a in enumerate(args)]
            x, z, y, st = ot.solve(*duals, duals=True, status=True, compiled=compiled)
            outs.append([fwAD.unpack_dual(t).tangent for t in (x, z, y)])
    ok = (st == SOLVED)[:, None]
    for a, b in zip(*outs):
        assert torch.isfinite(torch.where(ok, b, 0.0)).all()
        assert torch.allclose(torch.where(ok, a, 0.0), torch.where(ok, b, 0.0), atol=1e-8)
        assert torch.where(ok, b, 0.0).abs().max() > 0


def test_compiled_inference_warm_start_and_layer():
    """Without gradients the forward-only program runs; a warm start from the solution
    gives the same answer; OptNetLayer(compiled=True) gives the default layer's output and
    parameter gradients."""
    args = [a.detach() for a in _batch()]
    x, z, y, st = ot.solve(*args, duals=True, status=True, compiled=True)
    assert not x.requires_grad
    ok = st == SOLVED
    ref = ot.solve(*args)
    assert torch.allclose(x[ok], ref[ok], atol=1e-8)
    warm = ot.solve(*args, compiled=True, init={"x": torch.nan_to_num(x), "z": z, "y": y})
    assert torch.allclose(warm[ok], ref[ok], atol=1e-8)

    grads = []
    for compiled in (False, True):
        torch.manual_seed(0)
        layer = ot.OptNetLayer(n=5, n_ineq=7, n_eq=1, compiled=compiled)
        out = layer(torch.linspace(-1, 1, 15, dtype=F64).reshape(3, 5))
        out.square().sum().backward()
        grads.append((out.detach(), [p.grad.clone() for p in layer.parameters()]))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-8)
    for a, b in zip(grads[0][1], grads[1][1]):
        assert torch.allclose(a, b, atol=1e-7)


def test_compiled_leaves_jax_64_bit_setting_alone():
    """The programs run in JAX's 64-bit mode inside a context; the process's setting
    (off by default) is what it was."""
    before = bool(jax.config.jax_enable_x64)
    args = [a.detach() for a in _batch()]
    x = ot.solve(*args, compiled=True)
    assert x.dtype == F64
    assert bool(jax.config.jax_enable_x64) == before


def test_compiled_errors():
    """Other devices: a ValueError naming the argument and its device; torch.func: torch's
    own error (the function supports torch.autograd only)."""
    Q = torch.eye(2, dtype=F64, device="meta")
    with pytest.raises(ValueError, match=r"CPU tensors; received Q on meta"):
        ot.solve(Q, torch.ones(2, dtype=F64, device="meta"), compiled="jax")
    with pytest.raises(ValueError, match=r"compiled must be one of .*received 'xla'"):
        ot.solve(torch.eye(2, dtype=F64), torch.ones(2, dtype=F64), compiled="xla")
    with pytest.raises(ValueError, match=r"compiled must be one of .*received 1"):
        ot.solve(torch.eye(2, dtype=F64), torch.ones(2, dtype=F64), compiled=1)
    # True: JAX's programs for CPU tensors, torch.compile of the iteration elsewhere.
    from optnet.adapters.torch_autograd import _compiled_kind

    assert _compiled_kind(True, [torch.eye(2), None]) == "jax"
    assert _compiled_kind(True, [Q, torch.ones(2)]) == "torch"
    assert _compiled_kind(False, [Q]) is None
    args = [a.detach() for a in _batch()]

    def f(q):
        return ot.solve(args[0], q, *args[2:], compiled=True)[:3].sum()

    with pytest.raises(RuntimeError, match="setup_context"):
        torch.func.grad(f)(args[1])


def test_compiled_jax_takes_the_structured_path(diagonal_factorizations):
    """``compiled="jax"`` reads the data's structure before compiling, as the eager solve
    does: with a diagonal Q and bounds (the Sudoku layer's kind, A shared) the interior
    point factors vectors (``_kkt._factor_diagonal``); answers and gradients of all six
    inputs are the default path's."""
    calls = diagonal_factorizations
    rng = np.random.default_rng(5)
    n, m, B = 9, 3, 4
    A = rng.uniform(size=(m, n))
    data = [0.1 * np.eye(n), -rng.uniform(size=(B, n)), -np.eye(n), np.zeros(n), A,
            A @ np.ones(n)]
    results = []
    for compiled in (False, "jax"):
        args = [torch.tensor(a, dtype=F64, requires_grad=True) for a in data]
        x, st = ot.solve(*args, status=True, compiled=compiled)
        (x * torch.linspace(0.5, 1.5, n, dtype=F64)).sum().backward()
        results.append((x.detach(), st, [a.grad for a in args]))
        if not compiled:
            calls.clear()          # (the eager solve's own calls)
    assert calls                   # traced into the compiled program
    (x0, s0, g0), (x1, s1, g1) = results
    assert s0.tolist() == s1.tolist() == [SOLVED] * B
    assert torch.allclose(x0, x1, atol=1e-8, rtol=1e-8)
    for name, a, b in zip("QqGhAb", g0, g1):
        assert torch.allclose(a, b, atol=1e-7, rtol=1e-7), (name, (a - b).abs().max())
