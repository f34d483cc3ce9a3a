"""Eager ``optnet.solve`` on JAX arrays: one compiled program per signature (``_solve``)."""

from __future__ import annotations

import numpy as np
import pytest
from strategies import paper_problem

import optnet

ARGS = ("Q", "q", "G", "h", "A", "b")


def test_jax_solves_reuse_one_compiled_program(monkeypatch, seeds=6):
    """Eager ``optnet.solve`` on JAX arrays compiles one program per signature and reuses
    it: many solves of one shape in one process, every answer checked against NumPy; a
    later call of that shape adds no program."""
    jax = pytest.importorskip("jax")
    from optnet import _solve

    traces = []
    inner = _solve.solve_arrays

    def counted(be, *args):
        if be.ops.name == "jax":
            traces.append(1)
        return inner(be, *args)

    monkeypatch.setattr(_solve, "solve_arrays", counted)
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        shapes = [(5, 7)]
        for n, p in shapes:
            for seed in range(seeds):
                data = paper_problem(np.random.default_rng(seed), 2, n=n, p=p)
                sol = optnet.solve(*(data[k] for k in ARGS), backend="jax")
                ref = optnet.solve(*(data[k] for k in ARGS), backend="numpy")
                np.testing.assert_array_equal(np.asarray(sol.status), ref.status)
                np.testing.assert_allclose(np.asarray(sol.x), ref.x, rtol=1e-8, atol=1e-9)
        kept = len(_solve._JAX_PROGRAMS)
        assert 1 <= kept <= _solve.JAX_PROGRAMS_KEPT
        data = paper_problem(np.random.default_rng(99), 2, n=5, p=7)
        optnet.solve(*(data[k] for k in ARGS), backend="jax")
        assert len(_solve._JAX_PROGRAMS) == kept
        assert len(traces) == 1          # traced (and compiled) once for seven solves
    finally:
        jax.config.update("jax_enable_x64", before)


def test_compiler_options_only_where_xla_knows_them(monkeypatch):
    """optnet's own programs compile with ``COMPILER_OPTIONS`` where this jaxlib accepts
    them, and with none (not an error) where it does not; the options reach the jit."""
    jax = pytest.importorskip("jax")
    from optnet import _solve
    from optnet.backends import jax as jax_backend

    assert not jax_backend.accepts({"xla_no_such_option_of_any_jaxlib": True})
    assert jax_backend.accepts({})
    wanted = jax_backend.COMPILER_OPTIONS if jax_backend.accepts(
        jax_backend.COMPILER_OPTIONS) else None
    assert jax_backend.compiler_options() == wanted

    jits = []
    real_jit = jax.jit

    def spy(fn, **kw):
        jits.append(kw.get("compiler_options"))
        return real_jit(fn, **kw)

    monkeypatch.setattr(jax, "jit", spy)
    monkeypatch.setattr(_solve, "_JAX_PROGRAMS", type(_solve._JAX_PROGRAMS)())
    data = paper_problem(np.random.default_rng(0), 1, n=3, p=4)
    sol = optnet.solve(*(data[k] for k in ARGS), backend="jax")
    assert int(np.asarray(sol.status)[0]) == int(optnet.Status.SOLVED)
    assert jits == [wanted]


def _bounded_diagonal(rng, B=3, n=6, m=2):
    """A diagonal Q, bounds 0 <= x <= 1 (G = [I; -I]), a shared equality block."""
    Q = np.diag(rng.uniform(0.5, 2.0, n))
    G = np.concatenate([np.eye(n), -np.eye(n)])
    h = np.concatenate([np.ones(n), np.zeros(n)])
    A = rng.uniform(size=(m, n))
    return dict(Q=Q, q=rng.normal(size=(B, n)), G=G, h=h, A=A, b=A @ np.full(n, 0.5))


@pytest.mark.parametrize("structured", [True, False], ids=["bounds-diagonal", "general"])
def test_jax_programs_take_the_structured_path_of_their_data(monkeypatch, diagonal_factorizations,
                                                             structured):
    """The programs optnet compiles for concrete JAX arrays read the data's structure first
    (bounds on the variables, a diagonal Q), as an eager solve does: a problem that has it
    factors vectors in the interior point (``_kkt._factor_diagonal``), one that does not
    (a coupled Q) the full matrix; the answers are NumPy's either way."""
    jax = pytest.importorskip("jax")
    from optnet import _solve

    data = _bounded_diagonal(np.random.default_rng(1))
    if not structured:
        data["Q"] = data["Q"] + 0.1
    calls = diagonal_factorizations
    monkeypatch.setattr(_solve, "_JAX_PROGRAMS", type(_solve._JAX_PROGRAMS)())
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        sol = optnet.solve(**data, backend="jax")
        ref = optnet.solve(**data, backend="numpy")
    finally:
        jax.config.update("jax_enable_x64", before)
    np.testing.assert_array_equal(np.asarray(sol.status), ref.status)
    assert (ref.status == int(optnet.Status.SOLVED)).all()
    np.testing.assert_allclose(np.asarray(sol.x), ref.x, rtol=1e-8, atol=1e-9)
    assert bool(calls) == structured


def test_structure_of_the_data():
    """``structure_of``: bounds need every row of G with at most one nonzero, a lane with
    NaN is not structured, no G is bounds."""
    from optnet._pdipm import structure_of

    eye = np.eye(3)
    assert [bool(f) for f in structure_of(np, eye, -eye)] == [True, True, True]
    assert [bool(f) for f in structure_of(np, eye, None)] == [True, True, True]
    assert [bool(f) for f in structure_of(np, -eye, np.ones((2, 3)))] == [False, True, False]
    coupled = np.stack([eye, eye + 0.5])
    assert [bool(f) for f in structure_of(np, coupled, eye)] == [True, False, False]
    nan = np.stack([eye, np.full((3, 3), np.nan)])
    assert [bool(f) for f in structure_of(np, nan, eye)] == [True, False, False]
    # NaN off the diagonal only, in one row of G; a zero and a NaN on the diagonal; -0.0.
    off = eye.copy()
    off[0, 2] = np.nan
    assert [bool(f) for f in structure_of(np, off, np.array([[np.nan, 1.0, 0.0]]))] == \
        [False, False, False]
    assert [bool(f) for f in structure_of(np, np.diag([1.0, 0.0, 2.0]), eye)] == \
        [True, True, False]
    assert [bool(f) for f in structure_of(np, np.diag([1.0, np.nan, 2.0]), eye)] == \
        [True, True, False]
    assert [bool(f) for f in structure_of(np, eye - 0.0 * np.ones((3, 3)), -eye)] == \
        [True, True, True]


@pytest.mark.parametrize("name", ["array_api_strict", "torch", "jax"])
def test_structure_of_the_data_in_every_namespace(name):
    """The same flags from the Array API namespaces the solver runs in."""
    from optnet import backends
    from optnet._pdipm import structure_of

    pytest.importorskip(name)
    be = backends.load(name)
    xp = be.namespace
    eye = np.eye(3)
    off = eye.copy()
    off[1, 0] = 0.5
    for Q, G, want in ((eye, -eye, [True, True, True]), (off, eye, [True, False, False]),
                       (np.diag([1.0, 0.0, 2.0]), np.ones((1, 3)), [False, True, False])):
        got = structure_of(xp, be.asarray(Q), be.asarray(G))
        assert [bool(f) for f in got] == want


@pytest.mark.parametrize("path", ["optnet.solve", "optnet.jax.solve", "compiled-jax"])
@pytest.mark.parametrize("bad", ["vector", "not square"])
def test_malformed_q_gets_the_clear_error_before_any_structure_is_read(path, bad):
    """The structure read ahead of compiling (``structure_of``) never hides the input
    checks: a malformed ``Q`` gets their ValueError naming it, on every compiled path."""
    jax = pytest.importorskip("jax")
    Q = np.ones(3) if bad == "vector" else np.ones((3, 4))
    args = (Q, np.ones(3), -np.eye(3), np.zeros(3))
    want = "at least 2 dimension" if bad == "vector" else "must be square"
    with pytest.raises(ValueError, match=f"Q must .*{want}|Q must be square"):
        if path == "optnet.solve":
            optnet.solve(*args, backend="jax")
        elif path == "optnet.jax.solve":
            jax.jit(lambda q: optnet.jax.solve(args[0], q, *args[2:]))(np.ones(3))
        else:
            torch = pytest.importorskip("torch")
            optnet.torch.solve(*(torch.as_tensor(a) for a in args), compiled="jax")


def _jax_cholesky_both_ways(H, shifts, scale, skip):
    """The JAX backend's ``ops.cholesky`` of NumPy data (float64), called as it is and
    inside ``jit`` (array shifts as arguments, float shifts as constants): two
    ``(L, ok)`` pairs as NumPy arrays."""
    import jax
    import jax.numpy as jnp

    from optnet.backends.jax import ops

    arrays = tuple(jnp.asarray(t) for t in shifts if not isinstance(t, float))

    def call(H, scale, skip, *given):
        it = iter(given)
        tries = tuple(t if isinstance(t, float) else next(it) for t in shifts)
        return ops.cholesky(H, tries, H.dtype, scale, skip)

    args = (jnp.asarray(H), jnp.asarray(scale), jnp.asarray(skip), *arrays)
    return [tuple(np.asarray(a) for a in run(*args)) for run in (call, jax.jit(call))]


def test_jax_cholesky_takes_each_lanes_first_working_shift():
    """The JAX backend's Cholesky with several shifts: each lane gets the first shift for
    which ``H + shift diag(scale)`` factors (a definite lane the first, a singular one the
    second, an indefinite one the third), a lane no shift saves is not ``ok``, inside
    ``jit`` as outside."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    k = 4
    rng = np.random.default_rng(3)
    R = rng.normal(size=(k, k))
    definite = R @ R.T + np.eye(k)
    singular = np.outer(R[0], R[0]) + np.outer(R[1], R[1])          # rank 2
    indefinite = np.diag([1.0, 2.0, -0.5, 1.0])
    hopeless = np.full((k, k), np.nan)
    H = np.stack([definite, singular, indefinite, hopeless])
    scale = np.ones((4, k))
    shifts = (0.0, 1e-6, 1.0)
    want_shift = [0.0, 1e-6, 1.0]
    skip = np.zeros(4, dtype=bool)
    for L, ok in _jax_cholesky_both_ways(H, shifts, scale, skip):
        assert ok.tolist() == [True, True, True, False]
        for i in range(3):
            np.testing.assert_allclose(L[i] @ L[i].T, H[i] + want_shift[i] * np.eye(k),
                                       rtol=1e-12, atol=1e-12)
            assert np.allclose(np.triu(L[i], 1), 0.0)
        np.testing.assert_array_equal(L[3], np.eye(k))      # the identity where none works


def test_jax_cholesky_per_lane_try_reports_every_failure():
    """The interior point's per-lane try (one shift per lane, an array): ``ok`` is read on
    the factor's diagonal, and it is False for every kind of failure, a NaN or an infinite
    entry off the diagonal included, True for a skipped lane whatever its matrix; a lane
    that factors gets the factor of its own shift."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    k = 5
    rng = np.random.default_rng(4)
    R = rng.normal(size=(k, k))
    definite = R @ R.T + np.eye(k)
    nan_off, inf_off, indefinite = definite.copy(), definite.copy(), np.diag([1.0, 2, -3, 1, 1])
    nan_off[4, 1] = nan_off[1, 4] = np.nan
    inf_off[3, 0] = inf_off[0, 3] = np.inf
    H = np.stack([definite, nan_off, inf_off, indefinite, nan_off])
    skip = np.array([False, False, False, False, True])
    shift = np.array([1e-3, 1e-3, 1e-3, 1e-3, 1e-3])
    scale = np.ones((5, k))
    for L, ok in _jax_cholesky_both_ways(H, (shift,), scale, skip):
        assert ok.tolist() == [True, False, False, False, True]
        np.testing.assert_allclose(L[0] @ L[0].T, definite + 1e-3 * np.eye(k), rtol=1e-12)
