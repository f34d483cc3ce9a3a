"""Seeded generators of classical hard dense QP classes, with a known optimal point.

Each generator ``make_<class>(rng, **sizes)`` returns one problem (no batch
dimension) as a :class:`HardQP`: a dict mapping ``"Q"``, ``"q"``, ``"G"``,
``"h"``, ``"A"``, ``"b"`` to float64 NumPy arrays (``None`` for an absent
block), so that ``optnet.solve(**problem)`` and ``reference_solve(**problem)``
work directly, with the primal-dual point it was built from attached as
``problem.solution``.

Every problem is feasible and bounded *by construction*: an optimal point
``x*``, an active set, multipliers ``z* >= 0`` on the active rows (zero on the
others), equality multipliers ``y*`` and slacks ``s* > 0`` on the inactive rows
are drawn first, and then ::

    q = -(Q x* + A'y* + G'z*),   h = G x* + s*,   b = A x*

so that ``(x*, y*, z*, s*)`` satisfies the KKT conditions (in the sign
convention of ``optnet``: ``Qx + q + A'y + G'z = 0``, ``Gx + s = h``). For a
convex problem a KKT point is a global minimizer, hence the problem is bounded;
box rows are added where the class calls for them, not for boundedness.

The classes (:data:`CLASSES`) are modelled on the difficulties of the
Maros--Meszaros and CUTEst convex QP test sets; the docstring of each generator
says what makes it hard and which problems of those sets it resembles.
:func:`hard_problem` makes the problem of a class and seed at one of the sizes
of :data:`SIZES`, and :func:`hard_batch` stacks several seeds into a batch.
"""

from __future__ import annotations

import math
import zlib
from typing import NamedTuple

import numpy as np


class KnownSolution(NamedTuple):
    """The primal-dual point a problem was constructed from.

    Attributes
    ----------
    x : (n,) optimal point.
    y : (m,) equality multipliers (one choice; they need not be unique).
    z : (p,) inequality multipliers, ``>= 0``, zero on inactive rows.
    s : (p,) slacks ``h - Gx``, ``>= 0``, zero on the rows built to be tight.
    objective : float
        ``1/2 x'Qx + q'x`` at ``x``.
    """

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    s: np.ndarray
    objective: float


class HardQP(dict):
    """A generated problem: a dict of ``Q, q, G, h, A, b`` with its known solution.

    Parameters
    ----------
    data : dict
        Maps the six argument names to float64 arrays or ``None``.
    solution : KnownSolution
        The point the data was built from (``problem.solution``).
    """

    def __init__(self, data: dict, solution: KnownSolution):
        super().__init__(data)
        self.solution = solution


# ---------------------------------------------------------------- helpers


def _log_uniform(rng, lo: float, hi: float, size) -> np.ndarray:
    """``10**U(lo, hi)``: positive numbers spread evenly over decades."""
    return 10.0 ** rng.uniform(lo, hi, size)


def _psd(rng, n: int, rank: int) -> np.ndarray:
    """``F F' / rank`` with ``F`` an ``(n, rank)`` standard normal matrix (exactly symmetric)."""
    if rank == 0:
        return np.zeros((n, n))
    F = rng.standard_normal((n, rank)) / math.sqrt(rank)
    Q = F @ F.T
    return 0.5 * (Q + Q.T)


def _pd(rng, n: int, eps: float) -> np.ndarray:
    """``M M' / n + eps I``: positive definite, moderately conditioned."""
    return _psd(rng, n, n) + eps * np.eye(n)


def _box(n: int) -> np.ndarray:
    """The ``2n`` rows ``[I; -I]`` of a box ``lo <= x <= hi``."""
    return np.vstack([np.eye(n), -np.eye(n)])


def _assemble(rng, Q, x, G=None, z=None, s=None, A=None, y=None, shuffle=True) -> HardQP:
    """Build ``q``, ``h``, ``b`` from a primal-dual point and return the problem.

    Parameters
    ----------
    rng : numpy.random.Generator
        Used to shuffle the rows of ``G`` and of ``A`` (so that the active or
        redundant rows are not the first ones).
    Q : (n, n) symmetric array
    x : (n,) the optimal point.
    G : (p, n) array or None
    z : (p,) multipliers, ``>= 0``
    s : (p,) slacks, ``>= 0``, with ``z * s == 0``
    A : (m, n) array or None
    y : (m,) multipliers
    shuffle : bool
        Permute the rows of ``G`` (with ``z``, ``s``) and of ``A`` (with ``y``).

    Returns
    -------
    HardQP
    """
    f = np.float64
    Q = np.asarray(Q, f)
    assert np.array_equal(Q, Q.T), "Q must be exactly symmetric"
    x = np.asarray(x, f)
    n = x.shape[0]
    grad = Q @ x
    h = b = None
    if G is not None:
        G, z, s = np.asarray(G, f), np.asarray(z, f), np.asarray(s, f)
        assert np.all(z >= 0) and np.all(s >= 0) and np.all(z * s == 0)
        if shuffle:
            perm = rng.permutation(G.shape[0])
            G, z, s = G[perm], z[perm], s[perm]
        grad = grad + G.T @ z
        h = G @ x + s
    else:
        z = s = np.zeros(0)
    if A is not None:
        A, y = np.asarray(A, f), np.asarray(y, f)
        if shuffle:
            perm = rng.permutation(A.shape[0])
            A, y = A[perm], y[perm]
        grad = grad + A.T @ y
        b = A @ x
    else:
        y = np.zeros(0)
    q = -grad
    data = {"Q": Q, "q": q, "G": G, "h": h, "A": A, "b": b}
    data = {k: None if v is None else np.ascontiguousarray(v, dtype=f) for k, v in data.items()}
    assert data["Q"].shape == (n, n)
    obj = float(0.5 * x @ Q @ x + q @ x)
    return HardQP(data, KnownSolution(x, y, z, s, obj))


class _Rows:
    """Inequality rows with their multipliers and slacks, gathered block by block."""

    def __init__(self):
        self.G, self.z, self.s = [], [], []

    def add(self, g, z, s):
        self.G.append(np.atleast_2d(g))
        self.z.append(np.atleast_1d(z))
        self.s.append(np.atleast_1d(s))

    def stacked(self):
        """``(G, z, s)`` of all rows added, in order."""
        return np.vstack(self.G), np.concatenate(self.z), np.concatenate(self.s)


def _active_split(rng, p: int, k: int, zlo: float = -1.0, zhi: float = 1.0):
    """Multipliers and slacks of ``p`` rows of which ``k`` random ones are active.

    Active rows get ``z = 10**U(zlo, zhi)`` and ``s = 0``; the others ``z = 0``
    and ``s = U(0.1, 1)``.
    """
    act = np.zeros(p, dtype=bool)
    act[rng.choice(p, size=k, replace=False)] = True
    z = np.where(act, _log_uniform(rng, zlo, zhi, p), 0.0)
    s = np.where(act, 0.0, rng.uniform(0.1, 1.0, p))
    return z, s


# ---------------------------------------------------------------- the classes


def make_psd_rank_deficient(rng, n: int = 32, rank: int = 3, p_general: int = 16,
                            k_general: int = 4) -> HardQP:
    """Nearly an LP: ``Q = F F'`` of very low rank, bounded by a box.

    What makes it hard: ``Q`` has an ``(n - rank)``-dimensional null space, so
    the Newton matrix is singular without the barrier and constraint terms
    (regularization must carry it), and the optimum sits at a point where
    ``n - rank`` constraints are active, like an LP vertex, so that the
    barrier terms of the active rows blow up and those of the inactive rows
    vanish -- the ill-conditioning of interior-point methods on LPs. Resembles
    the Maros--Meszaros "Q" versions of netlib LPs, an LP plus a quadratic
    term on a few variables: QAFIRO (n = 32, the default size) and QBEACONF
    (n = 262, the slow size), also QSCAGR7, QSHARE1B.

    The box ``lo <= x <= hi`` has ``n - rank - k_general`` of its rows active;
    ``k_general`` of the ``p_general`` random rows are active too, all with
    multipliers in [0.1, 10]. The null space of the active rows then has the
    dimension ``rank``, on which ``Q`` is (generically) positive definite, so
    ``x*`` is the unique minimizer.

    Parameters
    ----------
    rng : numpy.random.Generator
    n : int
        Number of variables.
    rank : int
        Rank of ``Q`` (``rank + k_general <= n``).
    p_general : int
        Number of random (non-box) inequality rows.
    k_general : int
        How many of them are active.

    Returns
    -------
    HardQP
        ``p = p_general + 2 n`` inequality rows, no equality rows.
    """
    assert rank + k_general <= n and k_general <= p_general
    Q = _psd(rng, n, rank)
    x = rng.uniform(-1.0, 1.0, n)
    Gg = rng.standard_normal((p_general, n))
    zg, sg = _active_split(rng, p_general, k_general)
    # Box: the coordinates of J sit at one of their bounds.
    J = rng.choice(n, size=n - rank - k_general, replace=False)
    upper = rng.random(J.size) < 0.5
    s_hi = rng.uniform(0.5, 2.0, n)
    s_lo = rng.uniform(0.5, 2.0, n)
    z_hi = np.zeros(n)
    z_lo = np.zeros(n)
    zJ = _log_uniform(rng, -1.0, 1.0, J.size)
    s_hi[J[upper]], z_hi[J[upper]] = 0.0, zJ[upper]
    s_lo[J[~upper]], z_lo[J[~upper]] = 0.0, zJ[~upper]
    G = np.vstack([Gg, _box(n)])
    return _assemble(rng, Q, x, G, np.concatenate([zg, z_hi, z_lo]),
                     np.concatenate([sg, s_hi, s_lo]))


def make_slightly_indefinite(rng, n: int = 24, rank: int = 12, p_general: int = 16,
                             rel_neg: float = 1e-5) -> HardQP:
    """``Q`` = a low-rank PSD matrix plus rounding noise: ``lambda_min(Q) ~ -rel_neg ||Q||``.

    What makes it hard: the data of a convex model, stored or computed to
    about five significant digits (a covariance or Gram matrix ``F F'``
    assembled in low precision, a Hessian from finite differences), is
    slightly *indefinite*: the eigenvalues that should be 0 scatter around 0,
    the smallest at about ``-rel_neg * ||Q||_2``. A solver that factors ``Q``
    (or ``Q + G'WG`` with small ``W``) by Cholesky can break down, and one that
    checks convexity must decide whether this is rounding or a nonconvex
    model. Resembles Maros--Meszaros problems whose ``Q`` is singular with a
    large null space (like the CVXQP* and QSHIP* families) once their data
    has passed through a low-precision format or computation, and CUTEst
    models whose Hessian is assembled in floating point.

    ``Q = Q0 + t E`` with ``Q0 = F F'`` of rank ``rank`` and ``E`` a symmetric
    matrix with entries uniform in [-1/2, 1/2] (rounding errors), ``t`` set so
    that ``lambda_min(Q) = -rel_neg ||Q||_2`` (to a few percent). ``n - rank +
    2`` of the ``p_general`` random rows are active at ``x*`` with multipliers
    in [0.3, 3]: they pin the near-null space of ``Q``, so the given
    (indefinite) problem still has ``x*`` as a strict local minimizer, and, on
    the box ``x* - [0.5, 2] <= x <= x* + [0.5, 2]`` (always inactive), as its
    global minimizer: the gain ``z'(h - Gx)`` of leaving the active face is of
    order 1 per unit step, the loss from negative curvature of order
    ``rel_neg``.

    Parameters
    ----------
    rng : numpy.random.Generator
    n : int
    rank : int
        Rank of the PSD part (``n - rank + 2 <= p_general``).
    p_general : int
        Number of random inequality rows (plus the ``2 n`` box rows).
    rel_neg : float
        Target ``-lambda_min(Q) / ||Q||_2``.

    Returns
    -------
    HardQP
    """
    k = n - rank + 2
    assert k <= p_general and k <= n
    Q0 = _psd(rng, n, rank)
    U = rng.uniform(-0.5, 0.5, (n, n))
    E = np.triu(U) + np.triu(U, 1).T
    t = rel_neg * np.linalg.norm(Q0, 2)
    for _ in range(4):  # lambda_min(Q0 + tE) is nearly linear in t for small t
        ev = np.linalg.eigvalsh(Q0 + t * E)
        t *= rel_neg * max(abs(ev[0]), abs(ev[-1])) / max(-ev[0], 1e-300)
    Q = Q0 + t * E
    x = rng.uniform(-1.0, 1.0, n)
    Gg = rng.standard_normal((p_general, n))
    zg, sg = _active_split(rng, p_general, k, -0.5, 0.5)
    G = np.vstack([Gg, _box(n)])
    s_box = rng.uniform(0.5, 2.0, 2 * n)
    return _assemble(rng, Q, x, G, np.concatenate([zg, np.zeros(2 * n)]),
                     np.concatenate([sg, s_box]))


def make_degenerate(rng, n: int = 16, rank: int = 8, k_strong: int = 10, k_weak: int = 4,
                    n_dup: int = 3, n_comb: int = 5, p_inactive: int = 10) -> HardQP:
    """Degenerate optimum: more tight rows than variables, dependent and weakly active rows.

    What makes it hard: at ``x*`` there are ``k_strong + k_weak + n_dup +
    n_comb > n`` tight rows, so their normals are linearly dependent (the
    linear independence constraint qualification fails and the multipliers
    are not unique); ``k_weak`` tight rows and some of the combinations carry
    zero multipliers (strict complementarity fails: ``s_i = z_i = 0``, and an
    interior-point method sees both go to 0 at the same rate, which slows its
    final convergence and stalls active-set polishing). Resembles the
    Maros--Meszaros problems built on degenerate netlib LPs, whose optimal
    vertices have many more tight rows than the dimension (like QADLITTL,
    QSCORPIO, QSCAGR7/QSCAGR25).

    Tight rows: ``k_strong`` random rows with multipliers in [0.1, 10];
    ``k_weak`` random rows with multiplier 0; ``n_dup`` exact copies of strong
    rows (their multiplier shared with the original); ``n_comb`` linear
    combinations: half of them nonnegative combinations of strong rows
    (positive multiplier), half combinations with arbitrary signs of all
    tight rows (multiplier 0). ``p_inactive`` more random rows are inactive.
    ``Q = F F'`` of rank ``rank``; with ``n - k_strong < rank`` the minimizer
    is unique (generically).

    Parameters
    ----------
    rng : numpy.random.Generator
    n, rank, k_strong, k_weak, n_dup, n_comb, p_inactive : int

    Returns
    -------
    HardQP
        ``p = k_strong + k_weak + n_dup + n_comb + p_inactive``, no equalities.
    """
    assert n_dup <= k_strong
    Q = _psd(rng, n, rank)
    x = rng.standard_normal(n)
    Gs = rng.standard_normal((k_strong, n))
    zs = _log_uniform(rng, -1.0, 1.0, k_strong)
    Gw = rng.standard_normal((k_weak, n))
    # Exact duplicates of strong rows: the multiplier is split between the copies.
    dup = rng.choice(k_strong, size=n_dup, replace=False)
    share = rng.uniform(0.0, 1.0, n_dup)
    z_dup = share * zs[dup]
    zs = zs.copy()
    zs[dup] -= z_dup
    # Combinations.
    n_pos = n_comb // 2
    C_pos = rng.uniform(0.0, 1.0, (n_pos, k_strong)) * (rng.random((n_pos, k_strong)) < 0.4)
    C_pos[np.arange(n_pos), rng.integers(0, k_strong, n_pos)] += 0.5   # never an empty row
    C_any = rng.standard_normal((n_comb - n_pos, k_strong + k_weak))
    Gc = np.vstack([C_pos @ Gs, C_any @ np.vstack([Gs, Gw])])
    zc = np.concatenate([_log_uniform(rng, -1.0, 0.0, n_pos), np.zeros(n_comb - n_pos)])
    Gi = rng.standard_normal((p_inactive, n))
    G = np.vstack([Gs, Gw, Gs[dup], Gc, Gi])
    z = np.concatenate([zs, np.zeros(k_weak), z_dup, zc, np.zeros(p_inactive)])
    s = np.concatenate([np.zeros(k_strong + k_weak + n_dup + n_comb),
                        rng.uniform(0.1, 1.0, p_inactive)])
    return _assemble(rng, Q, x, G, z, s)


def make_redundant_equalities(rng, n: int = 20, rank: int = 16, m_indep: int = 6,
                              m_redundant: int = 6, p: int = 16, k_active: int = 4) -> HardQP:
    """Rank-deficient equality constraints with a consistent right-hand side.

    What makes it hard: ``A`` has ``m_indep + m_redundant`` rows but rank
    ``m_indep``: an exact copy of a row, a row scaled by -2, and random linear
    combinations of the independent rows, with ``b = A x*`` consistent (up to
    rounding). The KKT matrix is singular in the ``y`` block; the equality
    multipliers are not unique, and a solver must regularize or detect the
    dependency instead of factoring ``A A'``. Resembles models with
    flow-balance or accounting equalities, whose rows sum to a dependent row
    that presolve normally removes (like the Maros--Meszaros QSCSD* and
    QSHIP* families) and CUTEst's discretized control problems (DTOC*).

    ``Q = F F'`` of rank ``rank``; ``p`` random inequality rows of which
    ``k_active`` are active (multipliers in [0.1, 10]); ``y*`` standard normal
    on every row (one of many valid choices).

    Parameters
    ----------
    rng : numpy.random.Generator
    n, rank, m_indep, m_redundant, p, k_active : int
        ``m_redundant >= 2``.

    Returns
    -------
    HardQP
        ``m = m_indep + m_redundant`` rows of rank ``m_indep``.
    """
    assert m_redundant >= 2 and m_indep >= 2
    Q = _psd(rng, n, rank)
    x = rng.standard_normal(n)
    A0 = rng.standard_normal((m_indep, n))
    C = rng.standard_normal((m_redundant - 2, m_indep))
    A = np.vstack([A0, A0[:1], -2.0 * A0[1:2], C @ A0])
    y = rng.standard_normal(A.shape[0])
    G = rng.standard_normal((p, n))
    z, s = _active_split(rng, p, k_active)
    return _assemble(rng, Q, x, G, z, s, A, y)


def make_badly_scaled(rng, n: int = 20, m: int = 5, p: int = 30, k_active: int = 8,
                      decades: float = 3.0) -> HardQP:
    """A well-posed problem with rows and columns scaled over ``2 * decades`` decades.

    What makes it hard: coefficients of ``Q``, ``G`` and ``A`` span about
    ``1e-6 .. 1e6`` (for ``decades = 3``), the optimal multipliers reach
    about ``1e8`` and the optimal ``x`` mixes components of size ``1e-3`` and
    ``1e3``. Residual-based stopping tests and the choice of regularization
    depend on the scaling; a solver without equilibration sees a KKT matrix
    with condition number near ``1e12`` before the barrier terms. Resembles
    the badly scaled Maros--Meszaros problems, like BOYD1/BOYD2, QPILOTNO and
    HUESTIS/HUES-MOD.

    Construction: a well-conditioned problem in variables ``u`` (``Q0 = M M'
    / n + 0.1 I``, ``G0``, ``A0`` standard normal, ``u*`` standard normal,
    active multipliers ``z0`` in [0.1, 1e5] -- a few constraints pushed hard --
    inactive slacks in [0.1, 1]) is rewritten in ``x = u / D`` with column
    scales ``D`` and its rows scaled by ``R`` (inequalities) and ``S``
    (equalities), all ``10**U(-decades, decades)``::

        Q = D Q0 D,  G = R G0 D,  A = S A0 D,  x* = u*/D,  z* = z0/R,  y* = y0/S.

    Parameters
    ----------
    rng : numpy.random.Generator
    n, m, p, k_active : int
    decades : float
        Half-width of the range of the scale factors, in decades.

    Returns
    -------
    HardQP
    """
    Q0 = _pd(rng, n, 0.1)
    G0 = rng.standard_normal((p, n))
    A0 = rng.standard_normal((m, n)) if m else None
    u = rng.standard_normal(n)
    z0, s0 = _active_split(rng, p, k_active, -1.0, 5.0)
    y0 = rng.standard_normal(m)
    D = _log_uniform(rng, -decades, decades, n)
    R = _log_uniform(rng, -decades, decades, p)
    S = _log_uniform(rng, -decades, decades, m)
    Q = D[:, None] * Q0 * D[None, :]
    Q = 0.5 * (Q + Q.T)
    G = R[:, None] * G0 * D[None, :]
    A = S[:, None] * A0 * D[None, :] if m else None
    return _assemble(rng, Q, u / D, G, z0 / R, R * s0, A, y0 / S if m else None)


def make_many_rows(rng, n: int = 8, p: int = 500, k_active: int = 4, rank: int = 6) -> HardQP:
    """Few variables, very many inequality rows, most of them nearly active.

    What makes it hard: ``p >> n`` unit-norm rows in random directions (a
    polyhedral approximation of a curved set); ``k_active`` are active and the
    slacks of the others are spread over ``1e-4 .. 1``, so hundreds of rows
    are nearly active at the optimum and an interior-point method must tell
    them apart through ``s_i z_i -> 0``; the reduced matrix ``Q + G'WG`` sums
    ``p`` rank-one terms of wildly different size. Resembles the
    Maros--Meszaros problems with many more constraints than variables: the
    DUALC* family (DUALC1 has 9 variables and 215 rows, DUALC8 8 and 503) and
    KSIP (20 variables, 1001 rows, a semi-infinite-programming
    discretization).

    ``Q = F F'`` of rank ``rank`` (``n - k_active < rank``: unique minimizer),
    multipliers of the active rows in [0.1, 10].

    Parameters
    ----------
    rng : numpy.random.Generator
    n, p, k_active, rank : int

    Returns
    -------
    HardQP
    """
    Q = _psd(rng, n, rank)
    x = rng.standard_normal(n)
    G = rng.standard_normal((p, n))
    G /= np.linalg.norm(G, axis=1, keepdims=True)
    z, _ = _active_split(rng, p, k_active)
    s = np.where(z > 0, 0.0, _log_uniform(rng, -4.0, 0.0, p))
    return _assemble(rng, Q, x, G, z, s)


def make_many_vars(rng, n: int = 300, m: int = 5, p: int = 10, k_active: int = 4,
                   cond_decades: float = 6.0) -> HardQP:
    """Many variables and few rows: a large, ill-conditioned ``Q`` dominates.

    What makes it hard: ``n`` in the hundreds with only ``m + p`` rows, so
    the work and the accuracy are those of the dense ``n x n`` factorization
    of ``Q + G'WG``, with ``Q`` of condition number ``10**cond_decades``
    (eigenvalues log-uniform over ``1e-4 .. 1e2`` for 6 decades) -- rounding
    in the Newton step is amplified along the soft directions of ``Q``.
    Resembles the Maros--Meszaros problems with many variables and very few
    rows: the DUAL* family (dense ``Q``, about 90 variables, one equality
    row and bounds), HUESTIS/HUES-MOD (10000 variables, 2 rows) and BOYD1
    (18 rows).

    Parameters
    ----------
    rng : numpy.random.Generator
    n, m, p, k_active : int
    cond_decades : float

    Returns
    -------
    HardQP
    """
    U, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = _log_uniform(rng, 2.0 - cond_decades, 2.0, n)
    Q = (U * lam) @ U.T
    Q = 0.5 * (Q + Q.T)
    x = rng.standard_normal(n)
    G = rng.standard_normal((p, n))
    z, s = _active_split(rng, p, k_active)
    A = rng.standard_normal((m, n)) if m else None
    y = rng.standard_normal(m) if m else None
    return _assemble(rng, Q, x, G, z, s, A, y)


def make_duplicate_parallel(rng, n: int = 20, n_free: int = 5, n_fixed_ineq: int = 3,
                            n_fixed_eq: int = 2, n_fixed_both: int = 1, p_general: int = 12,
                            k_active: int = 4, n_dup: int = 4, n_par: int = 4,
                            m_general: int = 2) -> HardQP:
    """Duplicated and parallel rows, free variables and fixed variables written as rows.

    What makes it hard: the model carries the redundancy that presolve would
    remove -- exact duplicates of inequality rows, positively scaled copies
    (``a g'x <= a h``, the same half-space), parallel rows with a looser
    right-hand side (inactive, same normal), a duplicated and a scaled
    equality row, variables fixed by the two inequalities ``x_i <= c`` and
    ``-x_i <= -c`` (no strictly feasible point exists, so the interior of
    the feasible set is empty and a pure interior-point method has no
    center), variables fixed by an equality row, one fixed both ways, and
    free variables (no bound at all, among bounded ones). Resembles the
    Maros--Meszaros "Q" versions of netlib LPs that presolve shrinks, with
    fixed and free variables and duplicate or parallel rows (like
    QSHIP04L/08L/12L, QFORPLAN, QPILOTNO, QGROW7, QE226).

    Variables: ``n_free`` free ones, ``n_fixed_ineq`` fixed by two
    inequalities, ``n_fixed_eq`` by an equality, ``n_fixed_both`` by both,
    the rest in a box with a quarter of their bounds active. ``p_general``
    random rows (``k_active`` active), ``n_dup`` duplicates and ``n_par``
    scaled copies of them (active copies get multipliers too) and ``n_par``
    looser parallel copies; ``m_general`` random equality rows plus a
    duplicate and a scaled copy of the first. ``Q = M M' / n + 1e-2 I``.

    Parameters
    ----------
    rng : numpy.random.Generator
    n, n_free, n_fixed_ineq, n_fixed_eq, n_fixed_both, p_general, k_active, n_dup, n_par,
    m_general : int

    Returns
    -------
    HardQP
    """
    n_fixed = n_fixed_ineq + n_fixed_eq + n_fixed_both
    assert n_free + n_fixed < n and m_general >= 1
    Q = _pd(rng, n, 1e-2)
    x = rng.standard_normal(n)
    perm = rng.permutation(n)
    free = perm[:n_free]
    fixed_ineq = perm[n_free:n_free + n_fixed_ineq]
    fixed_eq = perm[n_free + n_fixed_ineq:n_free + n_fixed_ineq + n_fixed_eq]
    fixed_both = perm[n_free + n_fixed_ineq + n_fixed_eq:n_free + n_fixed]
    boxed = perm[n_free + n_fixed:]
    eye = np.eye(n)
    rows = _Rows()
    add = rows.add

    # Box on the bounded variables, a quarter of the bounds active.
    for sign in (1.0, -1.0):
        k = boxed.size
        act = rng.random(k) < 0.25
        add(sign * eye[boxed], np.where(act, _log_uniform(rng, -1, 1, k), 0.0),
            np.where(act, 0.0, rng.uniform(0.1, 1.0, k)))
    # Fixed variables as two inequalities (both tight; either, both or no multiplier > 0).
    for idx in np.concatenate([fixed_ineq, fixed_both]):
        z2 = _log_uniform(rng, -1, 1, 2) * (rng.random(2) < 0.6)
        add(eye[idx], z2[0], 0.0)
        add(-eye[idx], z2[1], 0.0)
    # General rows, their duplicates and parallel copies.
    Gg = rng.standard_normal((p_general, n))
    zg, sg = _active_split(rng, p_general, k_active)
    dup = rng.choice(p_general, size=n_dup, replace=True)
    par = rng.choice(p_general, size=n_par, replace=True)
    alpha = _log_uniform(rng, -1.0, 1.0, n_par)
    # Copies of active rows get multipliers too (any split is optimal: they are not unique).
    z_dup = rng.uniform(0.0, 1.0, n_dup) * zg[dup]
    z_par = rng.uniform(0.0, 1.0, n_par) * zg[par]
    add(Gg, zg, sg)
    add(Gg[dup], z_dup, sg[dup])
    add(alpha[:, None] * Gg[par], z_par / alpha, alpha * sg[par])
    loose = rng.choice(p_general, size=n_par, replace=False)
    beta = _log_uniform(rng, -1.0, 1.0, n_par)
    add(beta[:, None] * Gg[loose], 0.0 * beta, beta * (sg[loose] + rng.uniform(0.1, 1.0, n_par)))
    G, z, s = rows.stacked()
    # Equalities: fixed variables, random rows, a duplicate and a scaled copy.
    Ag = rng.standard_normal((m_general, n))
    A = np.vstack([eye[np.concatenate([fixed_eq, fixed_both])], Ag, Ag[:1], -3.0 * Ag[:1]])
    y = rng.standard_normal(A.shape[0])
    # Free variables: no box and no fixing row touches them (checked by the tests).
    assert not np.any(G[:, free][: 2 * boxed.size + 2 * (n_fixed_ineq + n_fixed_both)])
    return _assemble(rng, Q, x, G, z, s, A, y)


def make_near_lp(rng, n: int = 40, rank: int = 5, m_indep: int = 18, m_dep: int = 2,
                 n_upper: int = 12, n_free: int = 3, p_general: int = 8, k_active: int = 3,
                 n_scaled: int = 3) -> HardQP:
    """A production-planning-like near-LP: low-rank Q, mostly bound rows, balance equalities.

    What makes it hard: everything at once that a modelling language's output of a
    planning problem carries into a dense solver. ``Q = F F'`` of rank ``rank`` (an LP
    in all other directions); the inequalities are mostly variable bounds (``x >= 0``
    on all but ``n_free`` variables, upper bounds up to 5e3 on ``n_upper`` of them,
    and the free variables boxed by ``|x_i| <= 1e4``, bounds that are never active);
    ``m_indep`` flow-balance equalities with coefficients of both signs and magnitudes
    in [0.1, 150] plus ``m_dep`` rows that are sums of others, with a right-hand side
    ``b = A x*`` that is zero up to rounding (every balance row is orthogonal to
    ``x*`` by construction); ``p_general`` general rows (``k_active`` active) and
    ``n_scaled`` copies of them that differ only by a positive factor in [0.1, 10].
    The optimum has many variables at a bound, the equality block is singular and
    the active rows are dependent, so the multipliers are not unique. Modelled on the
    Maros--Meszaros problems derived from netlib planning LPs with a low-rank
    quadratic term (e.g. QSCFXM*, QSCTAP*, QFORPLAN: about 180 variables, 91
    equalities of rank 88 with a zero right-hand side, 249 rows of which 225 are
    bounds, coefficients from 0.1 to 150, bounds up to 5e3).

    Parameters
    ----------
    rng : numpy.random.Generator
    n, rank, m_indep, m_dep, n_upper, n_free, p_general, k_active, n_scaled : int

    Returns
    -------
    HardQP
        ``m = m_indep + m_dep`` equality rows of rank ``m_indep``.
    """
    assert n_free + n_upper < n and m_indep < n // 2 and 1 <= m_dep <= m_indep
    # Q: rank-deficient, entries of a modest size (a quadratic penalty on a few
    # combinations of the variables).
    F = rng.standard_normal((n, rank)) * _log_uniform(rng, -1.0, 0.5, rank)
    Q = F @ F.T
    Q = 0.5 * (Q + Q.T)
    perm = rng.permutation(n)
    free, upper = perm[:n_free], perm[n_free:n_free + n_upper]
    bounded = perm[n_free:]
    ub = _log_uniform(rng, 0.0, math.log10(5e3), n_upper)
    # x*: about half of the nonnegative variables at their lower bound 0, a third of
    # the upper-bounded ones at their upper bound, the rest strictly inside.
    x = np.zeros(n)
    x[free] = rng.uniform(-50.0, 50.0, n_free)
    inside = bounded[rng.random(bounded.size) < 0.5]
    x[inside] = _log_uniform(rng, -1.0, 2.5, inside.size)
    at_ub = rng.random(n_upper) < 0.35
    x[upper] = np.where(at_ub, ub, np.minimum(x[upper], 0.9 * ub))
    # Balance rows: 3-8 coefficients of both signs and magnitudes in [0.1, 150] on
    # variables at most an eighth the size of a large component x*_j, then the
    # coefficient of x_j that makes a'x* = 0 (redrawn until it too lies in that range).
    support = np.flatnonzero(x)
    large = support[np.abs(x[support]) >= np.median(np.abs(x[support]))]
    A0 = np.zeros((m_indep, n))
    for i in range(m_indep):
        for _ in range(100):
            j = rng.choice(large)
            small = np.flatnonzero(np.abs(x) <= abs(x[j]) / 8.0)
            cols = rng.choice(small, size=min(small.size, rng.integers(3, 9)), replace=False)
            a = rng.choice([-1.0, 1.0], cols.size) * _log_uniform(
                rng, -1.0, math.log10(150.0), cols.size)
            need = -(a @ x[cols]) / x[j]
            if 0.1 <= abs(need) <= 150.0:
                break
        A0[i, cols], A0[i, j] = a, need
    mix = np.zeros((m_dep, m_indep))
    for i in range(m_dep):
        mix[i, rng.choice(m_indep, size=min(3, m_indep), replace=False)] = 1.0
    A = np.vstack([A0, mix @ A0])
    y = rng.standard_normal(A.shape[0])
    eye = np.eye(n)
    rows = _Rows()
    add = rows.add

    # Lower bounds -x <= 0: active where x* = 0.
    lo_act = x[bounded] == 0.0
    add(-eye[bounded], np.where(lo_act, _log_uniform(rng, -1.0, 2.0, bounded.size), 0.0),
        x[bounded])
    # Upper bounds x <= ub: active where x* = ub.
    add(eye[upper], np.where(at_ub, _log_uniform(rng, -1.0, 2.0, n_upper), 0.0),
        ub - x[upper])
    # Free variables in a wide box that is never active.
    add(np.vstack([eye[free], -eye[free]]), np.zeros(2 * n_free),
        np.concatenate([1e4 - x[free], 1e4 + x[free]]))
    # General rows and positively scaled copies (the same half-spaces).
    Gg = rng.choice([-1.0, 1.0], (p_general, n)) * _log_uniform(rng, -1.0, math.log10(150.0),
                                                                 (p_general, n))
    Gg *= rng.random((p_general, n)) < 8.0 / n          # about 8 coefficients a row
    zg, sg = _active_split(rng, p_general, k_active, -1.0, 2.0)
    sg = sg * rng.uniform(1.0, 100.0, p_general)
    add(Gg, zg, sg)
    which = rng.choice(p_general, size=n_scaled, replace=True)
    fac = _log_uniform(rng, -1.0, 1.0, n_scaled)
    add(fac[:, None] * Gg[which], np.zeros(n_scaled), fac * sg[which])
    G, z, s = rows.stacked()
    return _assemble(rng, Q, x, G, z, s, A, y)


# ---------------------------------------------------------------- registry

#: The generator of each class.
CLASSES = {
    "psd_rank_deficient": make_psd_rank_deficient,
    "slightly_indefinite": make_slightly_indefinite,
    "degenerate": make_degenerate,
    "redundant_equalities": make_redundant_equalities,
    "badly_scaled": make_badly_scaled,
    "many_rows": make_many_rows,
    "many_vars": make_many_vars,
    "duplicate_parallel": make_duplicate_parallel,
    "near_lp": make_near_lp,
}

#: Keyword sizes of each class: "default" for the fast tests, "slow" for the big variants.
SIZES = {
    "psd_rank_deficient": {
        "default": {"n": 32, "rank": 3, "p_general": 16, "k_general": 4},
        "slow": {"n": 262, "rank": 18, "p_general": 60, "k_general": 20},
    },
    "slightly_indefinite": {
        "default": {"n": 24, "rank": 12, "p_general": 16},
        "slow": {"n": 120, "rank": 60, "p_general": 80},
    },
    "degenerate": {
        "default": {"n": 16, "rank": 8, "k_strong": 10, "k_weak": 4, "n_dup": 3, "n_comb": 5,
                    "p_inactive": 10},
        "slow": {"n": 150, "rank": 75, "k_strong": 90, "k_weak": 40, "n_dup": 30, "n_comb": 40,
                 "p_inactive": 100},
    },
    "redundant_equalities": {
        "default": {"n": 20, "rank": 16, "m_indep": 6, "m_redundant": 6, "p": 16,
                    "k_active": 4},
        "slow": {"n": 200, "rank": 160, "m_indep": 60, "m_redundant": 60, "p": 150,
                 "k_active": 40},
    },
    "badly_scaled": {
        "default": {"n": 20, "m": 5, "p": 30, "k_active": 8},
        "slow": {"n": 150, "m": 30, "p": 250, "k_active": 60},
    },
    "many_rows": {
        "default": {"n": 8, "p": 500, "k_active": 4, "rank": 6},
        "slow": {"n": 10, "p": 3000, "k_active": 5, "rank": 8},
    },
    "many_vars": {
        "default": {"n": 120, "m": 5, "p": 10, "k_active": 4},
        "slow": {"n": 300, "m": 5, "p": 12, "k_active": 5},
    },
    "duplicate_parallel": {
        "default": {"n": 20},
        "slow": {"n": 250, "n_free": 40, "n_fixed_ineq": 20, "n_fixed_eq": 15,
                 "n_fixed_both": 5, "p_general": 150, "k_active": 40, "n_dup": 40,
                 "n_par": 40, "m_general": 20},
    },
    "near_lp": {
        "default": {"n": 40},
        "slow": {"n": 180, "rank": 20, "m_indep": 88, "m_dep": 3, "n_upper": 45, "n_free": 5,
                 "p_general": 14, "k_active": 5, "n_scaled": 10},
    },
}


def hard_problem(name: str, seed: int, size: str = "default") -> HardQP:
    """The problem of class ``name`` for ``seed``.

    The generator is seeded with ``(seed, crc32(name))``, so that different
    classes with the same seed draw independent numbers.

    Parameters
    ----------
    name : str
        A key of :data:`CLASSES`.
    seed : int
    size : {"default", "slow"}
        Which sizes of :data:`SIZES` to use.

    Returns
    -------
    HardQP
    """
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    return CLASSES[name](rng, **SIZES[name][size])


def hard_batch(name: str, seed: int, count: int, size: str = "default") -> dict:
    """``count`` problems of one class stacked along a leading batch axis.

    Parameters
    ----------
    name : str
        A key of :data:`CLASSES`.
    seed : int
        The problems are those of seeds ``seed, seed + 1, ..., seed + count - 1``.
    count : int
    size : {"default", "slow"}

    Returns
    -------
    dict
        Maps ``"Q"``, ..., ``"b"`` to arrays of shape ``(count, ...)`` (``None``
        for absent blocks).
    """
    probs = [hard_problem(name, seed + i, size) for i in range(count)]
    return {k: None if probs[0][k] is None else np.stack([d[k] for d in probs])
            for k in probs[0]}


def problem_sizes(problem: dict) -> tuple[int, int, int]:
    """``(n, p, m)``: numbers of variables, inequality rows and equality rows."""
    n = problem["q"].shape[-1]
    p = 0 if problem["G"] is None else problem["G"].shape[-2]
    m = 0 if problem["A"] is None else problem["A"].shape[-2]
    return n, p, m


# ---------------------------------------------------------------- measures


def violation(problem: dict, x) -> float:
    """Relative constraint violation of ``x`` (0 for a feasible point).

    ``max(|Ax - b|_inf / max(1, |Ax|_inf, |b|_inf),
    |max(Gx - h, 0)|_inf / max(1, |Gx|_inf, |h|_inf))``, i.e. the equality
    and infeasibility residuals of ``reference.kkt_residuals`` (infinity
    norms, each relative to the larger of 1 and the size of its terms).
    NaN in ``x`` gives NaN.

    Parameters
    ----------
    problem : dict
        One problem (no batch dimension).
    x : (n,) array

    Returns
    -------
    float
    """
    x = np.asarray(x, dtype=np.float64)
    out = 0.0
    if problem["A"] is not None:
        Ax, b = problem["A"] @ x, problem["b"]
        out = max(out, _inf(Ax - b) / max(1.0, _inf(Ax), _inf(b)))
    if problem["G"] is not None:
        Gx, h = problem["G"] @ x, problem["h"]
        out = max(out, _inf(np.maximum(Gx - h, 0.0)) / max(1.0, _inf(Gx), _inf(h)))
    return float("nan") if not np.all(np.isfinite(x)) else out


def objective_error(problem: dict, x, x_ref, f_ref: float) -> float:
    """Relative objective error ``|f(x) - f_ref| / max(1, |x_ref'Q x_ref|, |q'x_ref|)``.

    The denominator is ``reference.objective_scale`` at the reference point
    (robust where ``f_ref`` is near 0 by cancellation). NaN in ``x`` gives NaN.

    Parameters
    ----------
    problem : dict
    x : (n,) array
        The point to assess.
    x_ref : (n,) array
        The reference minimizer.
    f_ref : float
        The optimal value.

    Returns
    -------
    float
    """
    Q, q = problem["Q"], problem["q"]
    x = np.asarray(x, dtype=np.float64)
    f = float(0.5 * x @ Q @ x + q @ x)
    scale = max(1.0, abs(float(x_ref @ Q @ x_ref)), abs(float(q @ x_ref)))
    return abs(f - f_ref) / scale


def psd_part(Q) -> np.ndarray:
    """The nearest positive semidefinite matrix to symmetric ``Q`` (negative eigenvalues -> 0)."""
    w, V = np.linalg.eigh(0.5 * (Q + Q.T))
    P = (V * np.maximum(w, 0.0)) @ V.T
    return 0.5 * (P + P.T)


def _inf(v) -> float:
    v = np.asarray(v)
    return float(np.max(np.abs(v))) if v.size else 0.0


class RefOptimum(NamedTuple):
    """The optimum a solver is compared with (see :func:`reference_optimum`).

    Attributes
    ----------
    status : str
        The reference solver's status (``"solved"``, ...).
    x : (n,) the reference minimizer.
    objective : float
        The optimal value.
    generator_error : float
        How far the reference solver's answer is from the construction
        (relative to ``objective_scale``); small unless the generator is broken.
    """

    status: str
    x: np.ndarray
    objective: float
    generator_error: float


#: Classes whose Q is not positive semidefinite (the reference solver needs a PSD Q).
INDEFINITE = frozenset({"slightly_indefinite"})


def reference_optimum(name: str, problem: HardQP) -> RefOptimum:
    """Solve ``problem`` with ``reference.reference_solve`` and check it against the construction.

    For a convex class the reference solver's ``x`` and objective are the
    target, and ``generator_error`` is ``|f_ref - f(x*)| / objective_scale``.

    For a class in :data:`INDEFINITE` the reference solver (a conic solver,
    it needs a PSD ``Q``) is run on the problem with ``Q`` replaced by its
    PSD part ``Q+`` (:func:`psd_part`); since ``Q <= Q+``, the minimum of the
    ``Q+`` problem must lie in ``[f*, f* + 1/2 x*'(Q+ - Q)x*]`` if ``x*`` is
    the global minimizer of the given problem, and ``generator_error`` is the
    relative distance of the reference value from that bracket. The target
    is then the constructed ``x*`` and ``f* = f(x*)``.

    Parameters
    ----------
    name : str
        The class of the problem.
    problem : HardQP

    Returns
    -------
    RefOptimum
    """
    from reference import SOLVED, objective_scale, reference_solve

    known = problem.solution
    Q, q = problem["Q"], problem["q"]
    scale = objective_scale(Q, q, known.x)
    if name not in INDEFINITE:
        ref = reference_solve(**problem)
        err = abs(ref.objective - known.objective) / scale if ref.status == SOLVED else np.inf
        return RefOptimum(ref.status, ref.x, ref.objective, err)
    Qp = psd_part(Q)
    ref = reference_solve(**{**problem, "Q": Qp})
    if ref.status != SOLVED:
        return RefOptimum(ref.status, known.x, known.objective, np.inf)
    lo = known.objective
    hi = known.objective + 0.5 * float(known.x @ (Qp - Q) @ known.x)
    err = max(0.0, lo - ref.objective, ref.objective - hi) / scale
    return RefOptimum(ref.status, known.x, known.objective, err)
