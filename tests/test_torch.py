"""The PyTorch adapter: ``optnet.torch.solve`` (autograd.Function) and ``OptNetLayer``.

Derivative checks use ``torch.autograd.gradcheck`` in float64 on problems whose
optimum is known and strictly complementary (slacks and multipliers >= 0.5,
active rows linearly independent), so that finite differences with gradcheck's
step (1e-6) never change the active set: the solution is smooth there and
gradcheck's default tolerances apply unchanged. The full Jacobian check
(``fast_mode=False``) runs on the smallest batched problem; the other
configurations use ``fast_mode=True`` (a random projection of the Jacobian,
same tolerances) to keep the run short.

CUDA variants run the same checks with ``device="cuda"`` and skip where no GPU is
available. Every test runs on both CPU paths (``torch_path``): small problems through
NumPy views of the tensors, and the torch backend's own iteration.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import optnet  # noqa: E402

ot = optnet.torch
NAMES = ("Q", "q", "G", "h", "A", "b")
SOLVED = int(optnet.Status.SOLVED)
F64 = torch.float64

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                   reason="CUDA is not available")),
]


@pytest.fixture(autouse=True, params=["numpy_route", "native"])
def torch_path(request, monkeypatch):
    """Every test twice: small CPU problems through NumPy views (what users get) and on
    the torch backend's own iteration (the path of CUDA tensors and large problems)."""
    from optnet.backends import _torch_via_numpy

    if request.param == "native":
        monkeypatch.setattr(_torch_via_numpy, "NUMPY_MAX_ENTRIES", 0)
    return request.param


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny problems: torch's intra-op threads only contend on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------
# problems with a known, strictly complementary optimum
# ---------------------------------------------------------------------------


def _lane_duals(rng, n, p, m):
    """x*, the active mask, z*, s*, y* of one lane (at most n - m active rows)."""
    x = rng.normal(size=n)
    k = int(rng.integers(1, min(p, n - m) + 1)) if p and n > m else 0
    active = np.zeros(p, dtype=bool)
    active[rng.permutation(p)[:k]] = True
    z = np.where(active, rng.uniform(0.5, 1.5, size=p), 0.0)
    s = np.where(active, 0.0, rng.uniform(0.5, 1.5, size=p))
    y = rng.normal(size=m)
    return x, active, z, s, y


def make_qp(seed, batch=2, n=3, p=4, m=1, pattern="batched"):
    """A batch of QPs (NumPy float64) and their exact solution.

    pattern:
      "batched"      every input has the batch dimension;
      "shared_mats"  Q, G, A shared (unbatched), q, h, b batched;
      "shared_vecs"  Q, G, A batched, q, h, b shared (the reverse).

    Returns ``(prob, sol)`` with ``sol = {"x", "z", "y", "s"}`` of shape (batch, .).
    """
    rng = np.random.default_rng(seed)
    lanes = [_lane_duals(rng, n, p, m) for _ in range(batch)]
    X = np.stack([ln[0] for ln in lanes])
    Z = np.stack([ln[2] for ln in lanes])
    S = np.stack([ln[3] for ln in lanes])
    Y = np.stack([ln[4] for ln in lanes])
    if pattern in ("batched", "shared_mats"):
        shape = () if pattern == "shared_mats" else (batch,)
        L = rng.normal(size=(*shape, n, n)) / math.sqrt(n)
        Q = L @ np.swapaxes(L, -1, -2) + np.eye(n)
        G = rng.normal(size=(*shape, p, n))
        # Full-rank equality rows.
        A = rng.normal(size=(*shape, m, n))
        Qb = np.broadcast_to(Q, (batch, n, n))
        Gb = np.broadcast_to(G, (batch, p, n))
        Ab = np.broadcast_to(A, (batch, m, n))
        q = -(np.einsum("bij,bj->bi", Qb, X) + np.einsum("bpi,bp->bi", Gb, Z)
              + np.einsum("bmi,bm->bi", Ab, Y))
        h = np.einsum("bpi,bi->bp", Gb, X) + S
        b = np.einsum("bmi,bi->bm", Ab, X)
    elif pattern == "shared_vecs":
        q = rng.normal(size=n)
        h = rng.normal(size=p)
        b = rng.normal(size=m)
        Qs, Gs, As, Xs = [], [], [], []
        for i in range(batch):
            _, _, z, s, y = lanes[i]
            for _ in range(1000):
                # x along -q makes x'v > 0 (v = Q x below) likely; keep well away from 0.
                x = -2.0 * q / np.linalg.norm(q) + 0.7 * rng.normal(size=n)
                G = rng.normal(size=(p, n))
                G = G + np.outer(h - s - G @ x, x) / (x @ x)          # G x = h - s
                A = rng.normal(size=(m, n))
                A = A + np.outer(b - A @ x, x) / (x @ x)              # A x = b
                v = -(q + G.T @ z + A.T @ y)                          # must equal Q x
                if x @ v > 0.3 * np.linalg.norm(x) * np.linalg.norm(v):
                    break
            else:  # pragma: no cover - the rejection loop always succeeds in practice
                raise RuntimeError("could not build a shared-vector problem")
            # BFGS-style update of I: symmetric positive definite and Q x = v.
            Q = np.eye(n) + np.outer(v, v) / (x @ v) - np.outer(x, x) / (x @ x)
            Qs.append(Q), Gs.append(G), As.append(A), Xs.append(x)
        Q, G, A, X = (np.stack(v) for v in (Qs, Gs, As, Xs))
    else:  # pragma: no cover
        raise ValueError(pattern)
    prob = {"Q": Q, "q": q, "G": G, "h": h, "A": A, "b": b}
    return prob, {"x": X, "z": Z, "y": Y, "s": S}


def tensors(prob, dtype=F64, device="cpu", requires_grad=False):
    return [torch.tensor(prob[k], dtype=dtype, device=device, requires_grad=requires_grad)
            for k in NAMES]


def solve_duals(*args):
    return ot.solve(*args, duals=True)


@pytest.mark.parametrize("pattern", ["batched", "shared_mats", "shared_vecs"])
def test_constructed_problems_have_the_known_solution(pattern):
    prob, sol = make_qp(1, batch=3, pattern=pattern)
    x, z, y, status = ot.solve(*tensors(prob), duals=True, status=True)
    assert torch.all(status == SOLVED)
    np.testing.assert_allclose(x.numpy(), sol["x"], atol=1e-9, rtol=1e-9)
    np.testing.assert_allclose(z.numpy(), sol["z"], atol=1e-9, rtol=1e-9)
    np.testing.assert_allclose(y.numpy(), sol["y"], atol=1e-9, rtol=1e-9)
    shared = {"batched": (), "shared_mats": ("Q", "G", "A"), "shared_vecs": ("q", "h", "b")}
    for k in NAMES:
        core = 2 if k in ("Q", "G", "A") else 1
        assert (prob[k].ndim == core) == (k in shared[pattern]), k


# ---------------------------------------------------------------------------
# gradcheck: reverse and forward mode, all six inputs, through x and the duals
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_full_jacobian_batched(device):
    prob, _ = make_qp(2, batch=2, n=3, p=3, m=1)
    args = tensors(prob, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(solve_duals, args, fast_mode=False)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pattern", ["batched", "shared_mats", "shared_vecs"])
def test_gradcheck_fast_shared_and_batched(pattern, device):
    prob, _ = make_qp(3, batch=3, n=4, p=5, m=2, pattern=pattern)
    args = tensors(prob, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(solve_duals, args, fast_mode=True)
    # x alone (zero cotangents on the duals) too.
    assert torch.autograd.gradcheck(ot.solve, args, fast_mode=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("pattern", ["batched", "shared_mats", "shared_vecs"])
def test_gradcheck_forward_mode(pattern, device):
    prob, _ = make_qp(4, batch=2, n=3, p=3, m=1, pattern=pattern)
    args = tensors(prob, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(
        solve_duals, args, check_forward_ad=True, check_backward_ad=False,
        check_undefined_grad=False, check_batched_grad=False,
        fast_mode=(pattern != "batched"),
    )


def test_gradcheck_some_inputs_only_and_no_constraints():
    prob, _ = make_qp(5, batch=2, n=3, p=3, m=1)
    Q, q, G, h, A, b = tensors(prob)
    q.requires_grad_(True)
    h.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda q, h: ot.solve(Q, q, G, h, A, b, duals=True), (q, h))
    # Equality constraints only, and no constraints at all.
    assert torch.autograd.gradcheck(
        lambda Q, q, A, b: ot.solve(Q, q, None, None, A, b, duals=True),
        [t.detach().requires_grad_(True) for t in (Q, q, A, b)])
    assert torch.autograd.gradcheck(lambda Q, q: ot.solve(Q, q),
                                    [t.detach().requires_grad_(True) for t in (Q, q)])


def test_grads_only_for_inputs_that_require_them():
    prob, _ = make_qp(6)
    Q, q, G, h, A, b = tensors(prob)
    q.requires_grad_(True)
    ot.solve(Q, q, G, h, A, b).sum().backward()
    assert q.grad is not None and torch.all(torch.isfinite(q.grad))
    assert float(q.grad.abs().max()) > 0
    for t in (Q, G, h, A, b):
        assert t.grad is None


# ---------------------------------------------------------------------------
# torch.func and forward mode agree with autograd
# ---------------------------------------------------------------------------


def _loss(*args):
    x, z, y = ot.solve(*args, duals=True)
    return (x ** 2).sum() + (z * torch.arange(z.shape[-1], dtype=z.dtype)).sum() + y.sum()


@pytest.mark.parametrize("pattern", ["batched", "shared_mats", "shared_vecs"])
def test_func_grad_matches_autograd(pattern):
    prob, _ = make_qp(7, batch=3, n=4, p=5, m=2, pattern=pattern)
    args = tensors(prob, requires_grad=True)
    _loss(*args).backward()
    expected = [a.grad for a in args]
    got = torch.func.grad(_loss, argnums=tuple(range(6)))(*[a.detach() for a in args])
    for k, e, g in zip(NAMES, expected, got):
        assert g.shape == e.shape, k
        assert float(e.abs().max()) > 0, k
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12, msg=k)


@pytest.mark.parametrize("pattern", ["batched", "shared_vecs"])
def test_func_jvp_matches_forward_ad_and_adjoint(pattern):
    prob, _ = make_qp(8, batch=3, n=4, p=5, m=2, pattern=pattern)
    args = tensors(prob)
    gen = torch.Generator().manual_seed(0)
    tans = [torch.randn(a.shape, dtype=F64, generator=gen) for a in args]

    primal, (tx, tz, ty) = torch.func.jvp(solve_duals, tuple(args), tuple(tans))
    torch.testing.assert_close(primal[0], ot.solve(*args), rtol=0, atol=0)

    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        duals = [fwAD.make_dual(a, t) for a, t in zip(args, tans)]
        outs = ot.solve(*duals, duals=True)
        fw = [fwAD.unpack_dual(o).tangent for o in outs]
    for name, a, b in zip("xzy", (tx, tz, ty), fw):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)

    # <w, J t> = <J' w, t> with J' from backward.
    w = [torch.randn(o.shape, dtype=F64, generator=gen) for o in primal]
    req = [a.detach().requires_grad_(True) for a in args]
    outs = ot.solve(*req, duals=True)
    vjps = torch.autograd.grad(outs, req, grad_outputs=w)
    lhs = sum(float((wi * ti).sum()) for wi, ti in zip(w, (tx, tz, ty)))
    rhs = sum(float((g * t).sum()) for g, t in zip(vjps, tans))
    assert abs(lhs) > 1e-3
    assert abs(lhs - rhs) <= 1e-9 * max(1.0, abs(lhs))


def test_func_jacrev_matches_autograd_jacobian():
    prob, _ = make_qp(9, batch=2, n=3, p=4, m=1, pattern="shared_mats")
    Q, q, G, h, A, b = tensors(prob)

    def f(q, h):
        return ot.solve(Q, q, G, h, A, b)

    J = torch.func.jacrev(f, argnums=(0, 1))(q, h)
    Jref = torch.autograd.functional.jacobian(f, (q, h))
    for a, r in zip(J, Jref):
        assert a.shape == r.shape
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)
    # Lanes are independent: no cross-lane blocks.
    assert float(J[0][0, :, 1, :].abs().max()) == 0.0
    assert float(J[0][0, :, 0, :].abs().max()) > 0.0


# ---------------------------------------------------------------------------
# dtype, device, status, failed lanes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
def test_float32_in_float32_out(device):
    prob, sol = make_qp(10, batch=3, n=4, p=5, m=2)
    args = tensors(prob, dtype=torch.float32, device=device, requires_grad=True)
    x, z, y, status = ot.solve(*args, duals=True, status=True)
    for t in (x, z, y):
        assert t.dtype == torch.float32
        assert t.device.type == device
    assert status.dtype == torch.int32 and status.device.type == device
    assert torch.all(status == SOLVED)
    # As accurate as float32 data allow (the exact solution is of the float64 data).
    x64 = ot.solve(*[a.detach().double() for a in args])   # the float32 data, in float64
    np.testing.assert_allclose(x.detach().cpu().numpy(), x64.cpu().numpy(), atol=1e-4)
    np.testing.assert_allclose(x64.cpu().numpy(), sol["x"], atol=1e-5)
    (x.sum() + z.sum() + y.sum()).backward()
    for a in args:
        assert a.grad.dtype == torch.float32
        assert a.grad.device.type == device
        assert torch.all(torch.isfinite(a.grad))


def test_mixed_float32_float64_computes_in_float64():
    prob, _ = make_qp(11)
    args = tensors(prob)
    args[1] = args[1].float()
    x = ot.solve(*args)
    assert x.dtype == F64


def test_non_tensor_inputs_are_converted():
    prob, _ = make_qp(12, pattern="shared_mats")
    Q, q, G, h, A, b = tensors(prob)
    x = ot.solve(prob["Q"], q, prob["G"], h, prob["A"], b)
    assert isinstance(x, torch.Tensor)
    torch.testing.assert_close(x, ot.solve(Q, q, G, h, A, b), rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_status_output_and_order(device):
    prob, sol = make_qp(13, batch=3)
    args = tensors(prob, device=device)
    out = ot.solve(*args, status=True)
    assert isinstance(out, tuple) and len(out) == 2
    x, status = out
    assert status.shape == (3,)
    np.testing.assert_array_equal(status.cpu().numpy(), [SOLVED] * 3)
    out = ot.solve(*args, duals=True, status=True)
    assert len(out) == 4
    assert out[1].shape == (3, 4) and out[2].shape == (3, 1)
    np.testing.assert_allclose(out[1].cpu().numpy(), sol["z"], atol=1e-9)
    x_only = ot.solve(*args)
    assert isinstance(x_only, torch.Tensor)
    torch.testing.assert_close(x_only, x, rtol=0, atol=0)


def _infeasible_lane(prob, lane, kind):
    """Make lane ``lane`` of a batched problem PRIMAL_INFEASIBLE or NaN."""
    prob = {k: v.copy() for k, v in prob.items()}
    if kind == "infeasible":
        n = prob["Q"].shape[-1]
        e = np.eye(n)[0]
        prob["G"][lane, 0], prob["G"][lane, 1] = e, -e      # x_0 <= -1 and x_0 >= 1
        prob["h"][lane, :2] = -1.0
        expected = int(optnet.Status.PRIMAL_INFEASIBLE)
    else:
        prob["q"][lane, 0] = np.nan
        expected = int(optnet.Status.NUMERICAL_ERROR)
    return prob, expected


@pytest.mark.parametrize("kind", ["infeasible", "nan"])
@pytest.mark.parametrize("shared", [False, True], ids=["batched", "shared_Q_A"])
def test_failed_lane_has_zero_grads_and_neighbours_unaffected(kind, shared):
    prob, _ = make_qp(14, batch=3, n=4, p=5, m=2,
                      pattern="shared_mats" if shared else "batched")
    if shared:   # Q and A shared by the batch; G batched (its failed lane is edited)
        prob["G"] = np.repeat(prob["G"][None], 3, axis=0)
    prob, expected = _infeasible_lane(prob, 1, kind)
    args = tensors(prob, requires_grad=True)
    x, z, y, status = ot.solve(*args, duals=True, status=True)
    np.testing.assert_array_equal(status.numpy(), [SOLVED, expected, SOLVED])
    assert torch.all(torch.isnan(x[1]))
    loss = x.nan_to_num().square().sum() + z.nan_to_num().sum() + y.nan_to_num().sum()
    loss.backward()

    # The good lanes, solved (and differentiated) on their own.
    keep = [0, 2]
    batched = {k: v.ndim == (3 if k in ("Q", "G", "A") else 2) for k, v in prob.items()}
    sub = {k: (v[keep] if batched[k] else v) for k, v in prob.items()}
    sargs = tensors(sub, requires_grad=True)
    xs, zs, ys = ot.solve(*sargs, duals=True)
    torch.testing.assert_close(x[keep], xs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(z[keep], zs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y[keep], ys, rtol=1e-12, atol=1e-12)
    (xs.square().sum() + zs.sum() + ys.sum()).backward()
    for k, a, s in zip(NAMES, args, sargs):
        assert torch.all(torch.isfinite(a.grad)), k
        if batched[k]:
            assert float(a.grad[1].abs().max()) == 0.0, f"{k}: failed lane has a gradient"
            torch.testing.assert_close(a.grad[keep], s.grad, rtol=1e-10, atol=1e-12, msg=k)
        else:   # shared: the sum over the good lanes only
            torch.testing.assert_close(a.grad, s.grad, rtol=1e-10, atol=1e-12, msg=k)


# ---------------------------------------------------------------------------
# OptNetLayer
# ---------------------------------------------------------------------------


def _manual_forward(layer, inputs):
    """The layer's forward pass spelled out, with statuses."""
    q = layer.input_map(inputs) if layer.input_map is not None else inputs
    Q, G, h, A, b = layer.qp_parameters()
    return ot.solve(Q, q, G, h, A, b, status=True)


def test_layer_shapes_and_parameters():
    torch.manual_seed(0)
    layer = ot.OptNetLayer(n=4, n_ineq=6, n_eq=2, in_features=5)
    z = layer(torch.randn(8, 5, dtype=F64))
    assert z.shape == (8, 4) and z.dtype == F64
    z = layer(torch.randn(2, 3, 5, dtype=F64))
    assert z.shape == (2, 3, 4)
    Q, G, h, A, b = layer.qp_parameters()
    assert Q.shape == (4, 4) and G.shape == (6, 4) and h.shape == (6,)
    assert A.shape == (2, 4) and b.shape == (2,)
    assert float(torch.linalg.eigvalsh(Q).min()) >= layer.eps * (1 - 1e-9)
    torch.testing.assert_close(Q, Q.mT, rtol=0, atol=0)
    # z0 is strictly feasible: h - G z0 = softplus(r) > 0, A z0 = b.
    assert torch.all(h - G @ layer.z0 > 0)
    torch.testing.assert_close(A @ layer.z0, b)
    names = {n for n, _ in layer.named_parameters()}
    assert {"L", "G", "A", "z0", "r", "input_map.weight", "input_map.bias"} <= names


def test_layer_without_constraints_blocks():
    layer = ot.OptNetLayer(n=3, n_ineq=0, n_eq=0)
    Q, G, h, A, b = layer.qp_parameters()
    assert G is None and h is None and A is None and b is None
    x = torch.randn(4, 3, dtype=F64)
    z = layer(x)
    # Unconstrained: Q z = -q.
    q = layer.input_map(x)
    torch.testing.assert_close(z @ Q.mT, -q, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("input_affine", [True, False])
def test_layer_input_map(input_affine):
    torch.manual_seed(1)
    layer = ot.OptNetLayer(n=3, n_ineq=4, n_eq=1, input_affine=input_affine)
    # Large inputs: some inequalities are active (else G, z0 and r get no gradient).
    x = 10.0 * torch.randn(5, 3, dtype=F64)
    z = layer(x)
    Q, G, h, A, b = layer.qp_parameters()
    _, status = _manual_forward(layer, x)
    assert torch.all(status == SOLVED)
    q = x if not input_affine else x @ layer.input_map.weight.mT + layer.input_map.bias
    torch.testing.assert_close(z, ot.solve(Q, q, G, h, A, b), rtol=1e-12, atol=1e-12)
    has_map = any(n.startswith("input_map") for n, _ in layer.named_parameters())
    assert has_map == input_affine
    z.sum().backward()
    for name, prm in layer.named_parameters():
        assert prm.grad is not None and torch.all(torch.isfinite(prm.grad)), name
        assert float(prm.grad.abs().max()) > 0, name


@pytest.mark.parametrize(
    "kwargs",
    [dict(n=0, n_ineq=2), dict(n=3, n_ineq=-1), dict(n=3, n_ineq=2, n_eq=3),
     dict(n=3, n_ineq=2, n_eq=-1), dict(n=3, n_ineq=2, in_features=4, input_affine=False)],
)
def test_layer_rejects_bad_sizes(kwargs):
    with pytest.raises(ValueError):
        ot.OptNetLayer(**kwargs)


def test_layer_dtype_and_device_arguments():
    layer = ot.OptNetLayer(n=3, n_ineq=2, dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in layer.parameters())
    z = layer(torch.randn(4, 3))
    assert z.dtype == torch.float32 and z.shape == (4, 3)
    assert torch.all(torch.isfinite(z))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_layer_on_cuda():
    layer = ot.OptNetLayer(n=3, n_ineq=4, n_eq=1, device="cuda")
    x = torch.randn(6, 3, dtype=F64, device="cuda")
    z = layer(x)
    assert z.device.type == "cuda"
    z.sum().backward()
    assert all(p.grad.device.type == "cuda" for p in layer.parameters())
    cpu = ot.OptNetLayer(n=3, n_ineq=4, n_eq=1)
    cpu.load_state_dict({k: v.cpu() for k, v in layer.state_dict().items()})
    torch.testing.assert_close(cpu(x.cpu()), z.detach().cpu(), rtol=1e-9, atol=1e-9)


def test_layer_learns_relu():
    """ReLU(x) = argmin_z 1/2 |z - x|^2 s.t. z >= 0: representable, so the layer must learn it.

    (Q = I, G = -I, h = 0, q = -x is one exact solution.) Every lane must stay
    SOLVED throughout (the always-feasible parameterization).
    """
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    layer = ot.OptNetLayer(n=4, n_ineq=4, input_affine=True)
    opt = torch.optim.Adam(layer.parameters(), lr=0.1)
    x_test = torch.randn(256, 4, dtype=F64, generator=gen)
    y_test = torch.relu(x_test)

    def test_mse():
        with torch.no_grad():
            return float(((layer(x_test) - y_test) ** 2).mean())

    initial = test_mse()
    for _ in range(120):
        x = torch.randn(32, 4, dtype=F64, generator=gen)
        opt.zero_grad()
        z, status = _manual_forward(layer, x)
        assert torch.all(status == SOLVED), status
        loss = ((z - torch.relu(x)) ** 2).mean()
        loss.backward()
        opt.step()
    final = test_mse()
    assert initial > 0.1                      # the untrained layer is far off ...
    assert final < 0.05 * initial, (initial, final)
    assert final < 5e-3, (initial, final)     # ... the trained one close
    # The manual forward pass used in training is the layer's.
    z, _ = _manual_forward(layer, x_test)
    torch.testing.assert_close(z, layer(x_test), rtol=0, atol=0)


# ---------------------------------------------------------------------------
# DistributedDataParallel
# ---------------------------------------------------------------------------


def _max_diff(a, b):
    """Max abs difference over two ``{name: tensor}`` dicts with the same keys."""
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_ddp_two_processes_matches_single_process(tmp_path):
    """DDP (gloo, 2 CPU processes, 4 samples each) trains like one process on all 8.

    The ranks run in a subprocess (``tests/_distributed/torch_ddp.py``) so that
    this process never initializes a process group.
    """
    root = Path(__file__).resolve().parents[1]
    script = root / "tests" / "_distributed" / "torch_ddp.py"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, cwd=str(root), env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ref = torch.load(tmp_path / "reference.pt")
    assert ref["all_solved"]
    steps = len(ref["grads"])
    assert steps == 3
    # Every parameter gets a gradient, so every one is compared.
    assert all(float(g.abs().max()) > 1e-6 for g in ref["grads"][0].values())
    for rank in range(2):
        out = torch.load(tmp_path / f"rank{rank}.pt")
        assert out["all_solved"], rank
        assert len(out["grads"]) == steps
        for step in range(steps):
            assert _max_diff(out["grads"][step], ref["grads"][step]) <= 1e-10, (rank, step)
            # A rank's own gradient is far from the full-batch one: the check above
            # fails if the gradients are not averaged over the ranks.
            assert _max_diff(out["local_grads"][step], ref["grads"][step]) > 1e-3, (rank, step)
        assert _max_diff(out["params"], ref["params"]) <= 1e-10, rank


def test_backward_keeps_no_reference_cycle_to_the_solution():
    """The autograd node keeps the solver's context for backward, never the solution's
    outputs: a reference from the node to its own outputs is a cycle through the C++ graph
    that no garbage collector frees (each training step would keep its factorization)."""
    import gc
    import weakref

    Q = torch.eye(3, dtype=torch.float64)
    q = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    G, h = -torch.eye(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    x = optnet.torch.solve(Q, q, G, h)
    held = weakref.ref(x.grad_fn.sol.context.x)     # an array of the solver's state
    x.sum().backward()
    assert q.grad is not None and torch.all(torch.isfinite(q.grad))
    del x
    gc.collect()
    assert held() is None

