"""Result types, status codes and errors shared by the whole package.

Nothing here imports an array library: the arrays inside these containers
belong to whatever namespace the caller used.
"""

from __future__ import annotations

import enum
from typing import Any, NamedTuple


class Status(enum.IntEnum):
    """Outcome of one problem of the batch (``QPSolution.status`` holds these codes).

    An integer enumeration: the status arrays hold the plain integer codes, so
    compare them with the members (``sol.status == optnet.Status.SOLVED``) or
    convert a code back (``optnet.Status(int(code))``). Each member's
    :attr:`explanation` says what the code means and what the arrays of that
    problem hold.

    Examples
    --------
    >>> import optnet
    >>> optnet.Status(2).name
    'PRIMAL_INFEASIBLE'
    >>> int(optnet.Status.SOLVED)
    0
    """

    SOLVED = 0
    """Residuals and gap met the tolerance: ``(x, y, z, s)`` is an optimal primal-dual pair."""
    MAX_ITER = 1
    """The iteration limit came first: the arrays hold the best iterate found, not certified."""
    PRIMAL_INFEASIBLE = 2
    """No feasible point: ``(y, z)`` hold a Farkas certificate with ``b'y + h'z = -1``."""
    DUAL_INFEASIBLE = 3
    """Unbounded below: ``x`` holds a direction of descent ``d`` with ``q'd = -1``."""
    NUMERICAL_ERROR = 4
    """NaN/Inf in the data, a failed factorization or a stalled iteration: arrays are NaN."""
    NONCONVEX = 5
    """``Q`` is clearly not positive semidefinite: the problem is not iterated, arrays are NaN."""

    @property
    def explanation(self) -> str:
        """A paragraph explaining this status (the text ``check=True`` errors quote)."""
        return STATUS_EXPLANATIONS[self]


STATUS_EXPLANATIONS = {
    Status.SOLVED: (
        "The primal residual, the dual residual and the duality gap all met the "
        "tolerance; x, y, z and s are an optimal primal-dual pair."
    ),
    Status.MAX_ITER: (
        "The iteration limit was reached before the tolerances were met. x, y, z "
        "and s hold the last iterate, which is usually close to optimal but not "
        "certified; raise max_iter or loosen tol, or inspect the residuals."
    ),
    Status.PRIMAL_INFEASIBLE: (
        "No x satisfies Ax = b and Gx <= h: the solver found a Farkas certificate "
        "(y, z) with z >= 0, A'y + G'z = 0 and b'y + h'z < 0. It is returned in y "
        "and z, scaled so that b'y + h'z = -1; x, s and the residuals are NaN."
    ),
    Status.DUAL_INFEASIBLE: (
        "The objective is unbounded below on the feasible set: the solver found a "
        "direction d with Qd = 0, Ad = 0, Gd <= 0 and q'd < 0. It is returned in "
        "x, scaled so that q'd = -1; y, z, s and the residuals are NaN (but for rows "
        "with h = +inf, whose z is 0 and s +inf)."
    ),
    Status.NUMERICAL_ERROR: (
        "The problem data contain NaN or Inf (other than +inf in h, which means "
        "'no constraint'), the KKT system could not be factored, or the iteration "
        "stalled (a step of negligible length). The solution arrays of this problem "
        "are NaN."
    ),
    Status.NONCONVEX: (
        "Q is not positive semidefinite: diag(Q)^-1/2 Q diag(Q)^-1/2 has an "
        "eigenvalue below -1e-3 (rounding errors above that are tolerated), so the "
        "problem is not convex and a KKT point need not be its minimum. The "
        "solution arrays of this problem are NaN."
    ),
}


class QPError(RuntimeError):
    """Raised by ``solve(..., check=True)`` when some problem is not SOLVED.

    Its message counts the problems that were not solved and, for each status
    among them, lists their flat batch indices (the first ten) with the
    status's :attr:`Status.explanation`.
    """


class QPSolution(NamedTuple):
    """Solution of a batch of quadratic programs.

    ``batch`` below is the broadcast of the leading dimensions of the inputs.

    Attributes
    ----------
    x : array, shape (*batch, n)
        Primal solution.
    z : array, shape (*batch, p)
        Duals of the inequalities ``Gx <= h`` (the paper's lambda), ``z >= 0``.
    y : array, shape (*batch, m)
        Duals of the equalities ``Ax = b`` (the paper's nu).
    s : array, shape (*batch, p)
        Slacks ``h - Gx >= 0`` (``+inf`` where ``h`` is ``+inf``).
    status : integer array, shape (*batch)
        One ``Status`` code per problem.
    iterations : integer array, shape (*batch)
        Interior-point iterations each problem took.
    primal_residual, dual_residual, gap : array, shape (*batch)
        Final infinity-norm residuals ``max(|Ax-b|, |Gx+s-h|)``,
        ``|Qx+q+A'y+G'z|`` and the duality gap ``|s'z|``, unscaled.

    Problems that are not ``SOLVED`` or ``MAX_ITER`` have NaN arrays, except for a
    certificate: a ``PRIMAL_INFEASIBLE`` problem's ``(y, z)`` is a Farkas vector
    (``z >= 0``, ``A'y + G'z = 0``, ``b'y + h'z = -1``) and a ``DUAL_INFEASIBLE``
    problem's ``x`` a direction ``d`` with ``Qd = 0``, ``Ad = 0``, ``Gd <= 0`` and
    ``q'd = -1`` (each to the solver's tolerance). Their derivatives are zero.
    """

    x: Any
    z: Any
    y: Any
    s: Any
    status: Any
    iterations: Any
    primal_residual: Any
    dual_residual: Any
    gap: Any
    # What the derivatives need (the problem and the final factorization),
    # read by ``optnet.vjp`` / ``optnet.jvp``; not part of the stable API.
    context: Any = None


class QPGrads(NamedTuple):
    """Gradients of a scalar loss with respect to the inputs of ``solve`` (``optnet.vjp``).

    Each field has the shape of the matching input (``None`` where the input
    was ``None``); an input shared by the batch gets the sum over the batch.

    Attributes
    ----------
    Q : array, shape of the ``Q`` given to ``solve``
        Symmetric in its last two dimensions (only ``Q``'s symmetric part is used).
    q : array, shape of ``q``
    G : array or None, shape of ``G``
    h : array or None, shape of ``h``
        Zero in rows where ``h`` is ``+inf``.
    A : array or None, shape of ``A``
    b : array or None, shape of ``b``
    """

    Q: Any
    q: Any
    G: Any
    h: Any
    A: Any
    b: Any


class QPTangents(NamedTuple):
    """Directional derivatives of a :class:`QPSolution` (``optnet.jvp``).

    Zero in problems that are not SOLVED.

    Attributes
    ----------
    x : array, shape (*batch, n)
        Tangent of the primal solution ``x``.
    z : array, shape (*batch, p)
        Tangent of the inequality duals ``z``.
    y : array, shape (*batch, m)
        Tangent of the equality duals ``y``.
    s : array, shape (*batch, p)
        Tangent of the slacks ``s = h - Gx``.
    """

    x: Any
    z: Any
    y: Any
    s: Any
