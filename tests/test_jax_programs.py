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
