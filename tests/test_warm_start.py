"""Warm start (``init=``): a previous solution as the starting point of each problem.

Answers, statuses and derivatives are the cold start's to the tolerance; on problems
perturbed from those of the given solution it takes fewer iterations; a given point that
is not finite (a failed solve) starts its problem cold; bad ``init`` arguments are a
``ValueError`` naming them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import to_numpy

import optnet
from optnet import Status

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from problems import make_problem  # noqa: E402

SOLVED = int(Status.SOLVED)


def _perturbed(batch, n, eps, seed):
    """The paper's QP batch, and a copy perturbed by ``eps`` relative (Q by a PSD term)."""
    data = {k: v for k, v in make_problem(batch, n, seed=seed).items() if v is not None}
    rng = np.random.default_rng(100 + seed)
    new = {k: v * (1 + eps * rng.standard_normal(v.shape)) for k, v in data.items()}
    M = rng.standard_normal(data["Q"].shape)
    new["Q"] = data["Q"] + eps * np.abs(data["Q"]).mean() * M @ np.swapaxes(M, -1, -2) / n
    return data, new


def _with_equalities(rng, batch, n, m):
    data = {k: v for k, v in make_problem(batch, n, seed=int(rng.integers(1000))).items()
            if v is not None}
    A = rng.standard_normal((batch, m, n))
    x0 = rng.uniform(-0.1, 0.1, (batch, n))
    data["A"], data["b"] = A, np.einsum("bmn,bn->bm", A, x0)
    return data


def _assert_same_answer(warm, cold, tol=1e-8):
    st_w, st_c = to_numpy(warm.status), to_numpy(cold.status)
    np.testing.assert_array_equal(st_w, st_c)
    ok = st_c == SOLVED
    for f in ("x", "z", "y"):
        a, b = to_numpy(getattr(warm, f))[ok], to_numpy(getattr(cold, f))[ok]
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, np.abs(b).max(initial=0)),
                                   err_msg=f)


@pytest.mark.parametrize("eps", [0.01, 0.1])
def test_warm_start_equals_cold_and_takes_fewer_iterations(backend, eps):
    data, new = _perturbed(16, 12, eps, seed=0)
    base = optnet.solve(**data, backend=backend)
    cold = optnet.solve(**new, backend=backend)
    warm = optnet.solve(**new, backend=backend, init=base)
    assert np.all(to_numpy(cold.status) == SOLVED)
    _assert_same_answer(warm, cold)
    its_w, its_c = to_numpy(warm.iterations), to_numpy(cold.iterations)
    assert its_w.mean() < its_c.mean(), (its_w, its_c)


def test_warm_start_with_equalities_and_x_only(backend):
    rng = np.random.default_rng(5)
    data = _with_equalities(rng, 6, 10, 3)
    base = optnet.solve(**data, backend=backend)
    new = dict(data, q=data["q"] + 0.01 * rng.standard_normal(data["q"].shape))
    cold = optnet.solve(**new, backend=backend)
    for init in (base, {"x": base.x}, {"x": base.x, "y": base.y}):
        _assert_same_answer(optnet.solve(**new, backend=backend, init=init), cold)


def test_a_failed_lane_of_the_given_solution_starts_cold():
    """A lane whose given point is NaN (an infeasible previous problem) starts cold: its
    answer and iterations are the cold start's, while the other lanes start warm."""
    data, new = _perturbed(4, 10, 0.01, seed=1)
    base = optnet.solve(**data)
    x = np.array(base.x)
    z = np.array(base.z)
    x[2] = np.nan
    z[2] = np.nan
    cold = optnet.solve(**new)
    warm = optnet.solve(**new, init={"x": x, "z": z})
    _assert_same_answer(warm, cold)
    assert warm.iterations[2] == cold.iterations[2]
    others = [0, 1, 3]
    assert warm.iterations[others].mean() < cold.iterations[others].mean()


def test_a_warm_start_outside_the_new_feasible_set():
    """The previous optimum violates the new problem's rows (h lowered): s = h - Gx is
    negative there, and the pushed start still gives the cold answer."""
    data = {k: v for k, v in make_problem(8, 10, seed=2).items() if v is not None}
    base = optnet.solve(**data)
    new = dict(data, h=data["h"] - 0.3)
    cold = optnet.solve(**new)
    assert np.all(cold.status == SOLVED)
    slack = new["h"] - np.einsum("bpn,bn->bp", new["G"], base.x)
    assert slack.min() < 0                              # the case under test
    _assert_same_answer(optnet.solve(**new, init=base), cold)


@pytest.mark.parametrize(
    ("init", "names"),
    [
        ({"x": np.zeros((3, 10))}, ("init['x']", "(4, 10)", "(3, 10)")),
        ({"x": np.zeros((4, 10)), "z": np.zeros((4, 9))}, ("init['z']", "(4, 10)", "(4, 9)")),
        ({"z": np.zeros((4, 10))}, ("init", "'x'")),
        ({"x": np.zeros((4, 10)), "w": 1}, ("init", "'w'")),
        ({"x": np.zeros((4, 10), dtype=np.int64)}, ("init['x']", "floating")),
        ([np.zeros((4, 10))], ("init", "QPSolution")),
        ({"x": object()}, ("init['x']",)),
    ],
    ids=["batch", "z_rows", "no_x", "extra_key", "int", "list", "object"],
)
def test_bad_init_is_a_value_error_naming_it(init, names):
    data = {k: v for k, v in make_problem(4, 10).items() if v is not None}
    with pytest.raises(ValueError) as err:
        optnet.solve(**data, init=init)
    for s in names:
        assert s in str(err.value), (s, str(err.value))


# ---------------------------------------------------------------- frameworks


@pytest.mark.parametrize("route", ["numpy_route", "native"])
def test_torch_warm_start_answers_and_gradients(monkeypatch, route):
    torch = pytest.importorskip("torch")
    from optnet.backends import _torch_via_numpy

    if route == "native":
        monkeypatch.setattr(_torch_via_numpy, "NUMPY_MAX_ENTRIES", 0)
    data, new = _perturbed(8, 10, 0.01, seed=3)
    base = {k: torch.from_numpy(v) for k, v in data.items()}
    x, z = optnet.torch.solve(**base, duals=True)[:2]

    def run(init):
        args = {k: torch.from_numpy(v).requires_grad_(True) for k, v in new.items()}
        out, st = optnet.torch.solve(**args, init=init, status=True)
        out.square().sum().backward()
        return out.detach(), st, {k: a.grad for k, a in args.items()}

    xw, stw, gw = run({"x": x, "z": z})
    xc, stc, gc = run(None)
    assert torch.equal(stw, stc) and bool((stc == SOLVED).all())
    torch.testing.assert_close(xw, xc, rtol=1e-9, atol=1e-9)
    for k in gc:
        torch.testing.assert_close(gw[k], gc[k], rtol=1e-7, atol=1e-9)
    # The layer passes it through.
    layer = optnet.torch.OptNetLayer(6, 4, dtype=torch.float64)
    inputs = torch.randn(3, 6, dtype=torch.float64)
    first = layer(inputs)
    torch.testing.assert_close(layer(inputs * 1.01, init={"x": first.detach()}),
                               layer(inputs * 1.01), rtol=1e-8, atol=1e-9)


def test_jax_warm_start_under_jit_and_grad():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    data, new = _perturbed(4, 8, 0.01, seed=4)
    d = {k: jnp.asarray(v) for k, v in data.items()}
    dn = {k: jnp.asarray(v) for k, v in new.items()}
    x, z, _ = optnet.jax.solve(**d, duals=True)

    def loss(q, init):
        return optnet.jax.solve(dn["Q"], q, dn["G"], dn["h"], init=init).sum()

    gw = jax.jit(jax.grad(loss))(dn["q"], {"x": x, "z": z})
    gc = jax.grad(loss)(dn["q"], None)
    np.testing.assert_allclose(np.asarray(gw), np.asarray(gc), rtol=1e-8, atol=1e-10)
    warm = optnet.solve(**dn, init={"x": x, "z": z})
    cold = optnet.solve(**dn)
    _assert_same_answer(warm, cold)
    assert np.asarray(warm.iterations).mean() < np.asarray(cold.iterations).mean()
