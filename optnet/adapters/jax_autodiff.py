"""``optnet.jax.solve``: the QP as a JAX function with a custom JVP rule.

One ``jax.custom_jvp`` rule built on the core forward-mode derivative
(``optnet.jvp``) serves every transformation: forward mode (``jax.jvp``,
``jax.jacfwd``) uses it directly, and reverse mode (``jax.grad``, ``jax.vjp``,
``jax.jacrev``) transposes it -- the tangent map is linear (matrix products and
triangular solves with the factorization the forward pass made), so JAX
derives the adjoint solve from it. Everything runs under ``jax.jit`` and
``jax.vmap`` (``lax.while_loop`` in the core). Derivatives of the second order work
forward over either mode (``jax.jacfwd(jax.grad(f))``, ``jax.hessian``): they differentiate
the rule, through the solve's iterations; reverse over reverse does not (JAX cannot reverse
a ``while_loop``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .. import _adjoint, _pipeline, _warm, backends
from .._lanes import split_arrays
from .._pdipm import known_structure
from . import outputs

NAMES = ("Q", "q", "G", "h", "A", "b")


def _solve(options, args, init):
    """``solve_arrays`` on JAX; ``options``: ``(tol, max_iter)`` or ``(tol, max_iter,
    structure)`` (``_pdipm.structure_of`` of concrete data, where a caller knows it)."""
    tol, max_iter, *structure = options
    return _pipeline.solve_arrays(backends.load("jax"), dict(zip(NAMES, args)), tol, max_iter,
                                  init, *structure)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _qp(options, Q, q, G, h, A, b, init):
    sol = _solve(options, (Q, q, G, h, A, b), init)
    return sol.x, sol.z, sol.y, sol.status


def _solved(options, args, init):
    """:func:`_solve` inside the JVP rule: the same solution, traced as one call.

    Reverse mode linearizes the rule (``jax.linearize``), which partially evaluates
    every operation of the solve one by one, and each of its loops again to a fixed
    point, though none of them depends on a tangent: a third of the tracing time of
    ``jax.grad`` (n = 10). A ``custom_jvp`` call whose inputs are all known is passed
    on whole instead. Its own rule (used only by derivatives of the second order)
    differentiates the solve as before, through its iterations.
    """
    box = {}

    def arrays(args, init):
        leaves, box["rebuild"] = split_arrays(_solve(options, args, init))
        return leaves

    call = jax.custom_jvp(arrays)
    call.defjvp(lambda primals, tangents: jax.jvp(arrays, primals, tangents))
    leaves = call(tuple(args), init)
    return box["rebuild"](leaves)


@_qp.defjvp
def _qp_jvp(options, primals, tangents):
    # The warm start (the last primal) only chooses where the iteration begins: the
    # solution does not depend on it, and its tangent is ignored.
    sol = _solved(options, primals[:6], primals[6])
    given = {f"d{k}": t for k, p, t in zip(NAMES, primals[:6], tangents[:6]) if p is not None}
    t = _adjoint.jvp(sol, **given)
    status_dot = np.zeros(sol.status.shape, dtype=jax.dtypes.float0)
    return (sol.x, sol.z, sol.y, sol.status), (t.x, t.z, t.y, status_dot)


def _as_float(a):
    if a is None:
        return None
    a = jnp.asarray(a)
    if not jnp.issubdtype(a.dtype, jnp.floating):
        if jnp.issubdtype(a.dtype, jnp.integer):
            return a.astype(jnp.result_type(float))
    return a


def solve(Q, q, G=None, h=None, A=None, b=None, *, tol=None, max_iter=None, duals=False,
          status=False, init=None):
    """Solve a batch of QPs, differentiably, in JAX.

    Parameters are those of :func:`optnet.solve` (arrays of any kind are
    converted with ``jnp.asarray``).

    Parameters
    ----------
    tol, max_iter : optional
        As in :func:`optnet.solve` (static: changing them retraces).
    duals : bool
        Also return the duals ``z`` (*batch, p) and ``y`` (*batch, m).
    status : bool
        Also return the per-problem ``optnet.Status`` codes (*batch).
    init : QPSolution or mapping, optional
        A warm start, as in :func:`optnet.solve`; not differentiated.

    Returns
    -------
    x : (*batch, n), or the tuple ``(x[, z, y][, status])``.
        Differentiable in forward and reverse mode with respect to all six
        inputs, through ``x`` and the duals. Problems that are not SOLVED have
        zero derivatives (and NaN solutions where infeasible).
    """
    args = tuple(_as_float(a) for a in (Q, q, G, h, A, b))
    options = (None if tol is None else float(tol), None if max_iter is None else int(max_iter))
    # Q and G known at trace time (constants of the caller's program, as the Sudoku layer's
    # 0.1 I and -I are): their structure chooses the program's path as an eager solve's
    # host read would (_pdipm.iteration_problem). (The arguments as given: inside a trace
    # even jnp.asarray of a NumPy array is traced.)
    if not any(isinstance(a, jax.core.Tracer) for a in (Q, G)):
        structure = known_structure(np, np.asarray(Q), None if G is None else np.asarray(G))
        if structure is not None:
            options += (structure,)
    init = _warm.as_mapping(init)
    if init is not None:
        init = {k: None if a is None else jax.lax.stop_gradient(_as_float(a))
                for k, a in init.items()}
    x, z, y, st = _qp(options, *args, init)
    return outputs(x, z, y, st, duals, status)
