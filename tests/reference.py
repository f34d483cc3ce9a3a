"""An independent reference QP solver (Clarabel plus an active-set polish) and KKT checks.

The accuracy tests compare ``optnet.solve`` against :func:`reference_solve`, one
problem at a time, in float64. Clarabel (an interior-point conic solver) is run
at tolerance 1e-10 -- tighter settings make it stop with ``InsufficientProgress``
on some problems -- and its answer is then polished: on Clarabel's active set
(rows with ``z_i > s_i``) the optimum solves the equality-constrained KKT system ::

    [ Q   A'  Ga' ] [ x  ]   [ -q  ]
    [ A   0   0   ] [ y  ] = [  b  ]
    [ Ga  0   0   ] [ za ]   [ h_a ]

which one least-squares solve gives to working precision. The polished point is
kept if it is feasible, dual feasible, and its KKT residual is no worse than
Clarabel's.

Sign conventions (those of ``optnet``)::

    Qx + q + A'y + G'z = 0,   Ax = b,   Gx + s = h,   s >= 0,   z >= 0,   s'z = 0.
"""

from __future__ import annotations

from typing import NamedTuple

import clarabel
import numpy as np
import scipy.sparse as sp

SOLVED = "solved"
PRIMAL_INFEASIBLE = "primal infeasible"
DUAL_INFEASIBLE = "dual infeasible"
FAILED = "failed"

_STATUS = {
    "Solved": SOLVED,
    "AlmostSolved": SOLVED,
    "PrimalInfeasible": PRIMAL_INFEASIBLE,
    "AlmostPrimalInfeasible": PRIMAL_INFEASIBLE,
    "DualInfeasible": DUAL_INFEASIBLE,
    "AlmostDualInfeasible": DUAL_INFEASIBLE,
}


class RefSolution(NamedTuple):
    """Reference solution of one QP.

    Attributes
    ----------
    x : (n,) primal solution (NaN unless ``status == "solved"``).
    y : (m,) equality duals.
    z : (p,) inequality duals (exactly 0 on rows with ``h = +inf``).
    s : (p,) slacks ``h - Gx`` (``+inf`` on rows with ``h = +inf``).
    status : str
        One of ``"solved"``, ``"primal infeasible"``, ``"dual infeasible"``,
        ``"failed"``.
    objective : float
        ``1/2 x'Qx + q'x`` (NaN unless solved).
    polished : bool
        Whether the active-set polish was accepted.
    """

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    s: np.ndarray
    status: str
    objective: float
    polished: bool


class KKTResiduals(NamedTuple):
    """Scaled KKT residuals of a primal-dual point (all dimensionless, >= 0).

    Attributes
    ----------
    stationarity : ``|Qx + q + A'y + G'z| / max(1, |Qx|, |q|, |A'y|, |G'z|)``
    equality : ``|Ax - b| / max(1, |Ax|, |b|)``
    inequality : ``|Gx + s - h| / max(1, |Gx|, |h|, |s|)`` (finite rows of ``h``)
    infeasibility : ``max(Gx - h, 0) / max(1, |Gx|, |h|)`` (finite rows of ``h``)
    complementarity : ``|s'z| / max(1, |x'Qx|, |q'x|)`` (finite rows of ``h``)
    dual_sign : ``max(-z, 0) / max(1, |z|)``
    slack_sign : ``max(-s, 0) / max(1, |s|)``

    All norms are infinity norms.
    """

    stationarity: float
    equality: float
    inequality: float
    infeasibility: float
    complementarity: float
    dual_sign: float
    slack_sign: float

    def worst(self) -> float:
        """The largest of the residuals."""
        return max(self)


def _norm(v) -> float:
    v = np.asarray(v, dtype=np.float64)
    return float(np.max(np.abs(v))) if v.size else 0.0


def objective(Q, q, x) -> float:
    """The objective ``1/2 x'Qx + q'x`` of one problem, in float64.

    Parameters
    ----------
    Q : (n, n) array
    q : (n,) array
    x : (n,) array

    Returns
    -------
    float
    """
    Q, q, x = (np.asarray(a, dtype=np.float64) for a in (Q, q, x))
    return float(0.5 * x @ Q @ x + q @ x)


def objective_scale(Q, q, x) -> float:
    """The scale against which objective errors are measured: ``max(1, |x'Qx|, |q'x|)``.

    Parameters
    ----------
    Q : (n, n) array
    q : (n,) array
    x : (n,) array

    Returns
    -------
    float
    """
    Q, q, x = (np.asarray(a, dtype=np.float64) for a in (Q, q, x))
    return max(1.0, abs(float(x @ Q @ x)), abs(float(q @ x)))


def kkt_residuals(Q, q, G, h, A, b, x, y, z, s) -> KKTResiduals:
    """Scaled KKT residuals of the point ``(x, y, z, s)`` of one problem.

    Rows with ``h = +inf`` are left out of the inequality, infeasibility and
    complementarity residuals; ``z`` must be 0 there (this enters the
    stationarity residual).

    Parameters
    ----------
    Q : (n, n)   q : (n,)
    G : (p, n) or None   h : (p,) or None
    A : (m, n) or None   b : (m,) or None
    x : (n,)   y : (m,)   z : (p,)   s : (p,)
        The point, any float dtype (computations are in float64).

    Returns
    -------
    KKTResiduals
    """
    f = np.float64
    Q, q, x = np.asarray(Q, f), np.asarray(q, f), np.asarray(x, f)
    Qx = Q @ x
    r = Qx + q
    scale_d = max(1.0, _norm(Qx), _norm(q))
    equality = inequality = infeasibility = complementarity = 0.0
    dual_sign = slack_sign = 0.0
    if A is not None and A.shape[-2]:
        A, b, y = np.asarray(A, f), np.asarray(b, f), np.asarray(y, f)
        Aty = A.T @ y
        r = r + Aty
        scale_d = max(scale_d, _norm(Aty))
        Ax = A @ x
        equality = _norm(Ax - b) / max(1.0, _norm(Ax), _norm(b))
    if G is not None and G.shape[-2]:
        G, h, z, s = (np.asarray(a, f) for a in (G, h, z, s))
        Gtz = G.T @ z
        r = r + Gtz
        scale_d = max(scale_d, _norm(Gtz))
        fin = np.isfinite(h)
        Gx, hf, sf, zf = G[fin] @ x, h[fin], s[fin], z[fin]
        scale_p = max(1.0, _norm(Gx), _norm(hf))
        inequality = _norm(Gx + sf - hf) / max(scale_p, _norm(sf))
        infeasibility = _norm(np.maximum(Gx - hf, 0.0)) / scale_p
        complementarity = abs(float(sf @ zf)) / objective_scale(Q, q, x)
        dual_sign = _norm(np.maximum(-z, 0.0)) / max(1.0, _norm(z))
        slack_sign = _norm(np.maximum(-sf, 0.0)) / max(1.0, _norm(sf))
    stationarity = _norm(r) / scale_d
    return KKTResiduals(stationarity, equality, inequality, infeasibility, complementarity,
                        dual_sign, slack_sign)


def _clarabel(Q, q, G, h, A, b, tol):
    n = q.shape[0]
    P = sp.csc_matrix(np.triu(Q))
    blocks, rhs, cones = [], [], []
    if A is not None and A.shape[0]:
        blocks.append(A)
        rhs.append(b)
        cones.append(clarabel.ZeroConeT(A.shape[0]))
    if G is not None and G.shape[0]:
        blocks.append(G)
        rhs.append(h)
        cones.append(clarabel.NonnegativeConeT(G.shape[0]))
    M = sp.csc_matrix(np.vstack(blocks)) if blocks else sp.csc_matrix((0, n))
    c = np.concatenate(rhs) if rhs else np.zeros(0)
    settings = clarabel.DefaultSettings()
    settings.verbose = False
    settings.max_iter = 200
    settings.tol_gap_abs = tol
    settings.tol_gap_rel = tol
    settings.tol_feas = tol
    settings.presolve_enable = False
    sol = clarabel.DefaultSolver(P, q, M, c, cones, settings).solve()
    return sol


def reference_solve(Q, q, G=None, h=None, A=None, b=None, *, tol=1e-10) -> RefSolution:
    """Solve one QP with Clarabel and polish the answer on its active set.

    Parameters
    ----------
    Q : (n, n) array
        Positive semidefinite (only its symmetric part is used).
    q : (n,) array
    G : (p, n) array or None
    h : (p,) array or None
        Rows with ``h = +inf`` are dropped (no constraint).
    A : (m, n) array or None
    b : (m,) array or None
    tol : float
        Clarabel's feasibility and gap tolerances.

    Returns
    -------
    RefSolution
    """
    f = np.float64
    Q = np.asarray(Q, f)
    Q = 0.5 * (Q + Q.T)
    q = np.asarray(q, f)
    n = q.shape[0]
    G = None if G is None else np.asarray(G, f).reshape(-1, n)
    h = None if h is None else np.asarray(h, f).reshape(-1)
    A = None if A is None else np.asarray(A, f).reshape(-1, n)
    b = None if b is None else np.asarray(b, f).reshape(-1)
    p = 0 if G is None else G.shape[0]
    m = 0 if A is None else A.shape[0]
    keep = np.isfinite(h) if p else np.zeros(0, dtype=bool)
    Gk, hk = (G[keep], h[keep]) if p else (None, None)

    sol = _clarabel(Q, q, Gk, hk, A, b, tol)
    status = _STATUS.get(str(sol.status).split(".")[-1], FAILED)
    if status != SOLVED:
        return RefSolution(np.full(n, np.nan), np.full(m, np.nan), np.full(p, np.nan),
                           np.full(p, np.nan), status, float("nan"), False)
    x = np.asarray(sol.x, f)
    duals = np.asarray(sol.z, f)
    y, zk = duals[:m], duals[m:]
    sk = np.asarray(sol.s, f)[m:]
    best = (x, y, zk, sk)
    best_res = kkt_residuals(Q, q, Gk, hk, A, b, *best).worst()
    polished = False

    # Active-set polish.
    act = zk > sk if Gk is not None else np.zeros(0, dtype=bool)
    Ga = Gk[act] if Gk is not None else np.zeros((0, n))
    ha = hk[act] if Gk is not None else np.zeros(0)
    E = np.vstack([A if m else np.zeros((0, n)), Ga])
    e = np.concatenate([b if m else np.zeros(0), ha])
    k = E.shape[0]
    K = np.block([[Q, E.T], [E, np.zeros((k, k))]])
    sol_ls = np.linalg.lstsq(K, np.concatenate([-q, e]), rcond=None)[0]
    xp_, yp = sol_ls[:n], sol_ls[n:n + m]
    za = sol_ls[n + m:]
    if Gk is not None:
        zp = np.zeros(Gk.shape[0])
        zp[act] = za
        Gx = Gk @ xp_
        hscale = max(1.0, _norm(hk), _norm(Gx))
        zscale = max(1.0, _norm(zp))
        feasible = bool(np.all(Gx <= hk + 1e-9 * hscale)) and bool(np.all(za >= -1e-9 * zscale))
        zp = np.maximum(zp, 0.0)
        sp_ = np.where(act, 0.0, np.maximum(hk - Gx, 0.0))
    else:
        zp, sp_, feasible = np.zeros(0), np.zeros(0), True
    if feasible and np.all(np.isfinite(sol_ls)):
        cand = (xp_, yp, zp, sp_)
        cand_res = kkt_residuals(Q, q, Gk, hk, A, b, *cand).worst()
        if cand_res <= best_res:
            best, polished = cand, True

    x, y, zk, sk = best
    z = np.zeros(p)
    s = np.full(p, np.inf)
    if p:
        z[keep] = zk
        s[keep] = sk
    return RefSolution(x, y, z, s, SOLVED, objective(Q, q, x), polished)
