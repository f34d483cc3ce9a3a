"""Per-lane classification of an interior-point iterate: solved, infeasible, unbounded.

The iterate of the homogeneous embedding (``_step``) is ``(x, y, z, tau)`` and
``(s, kappa)``; its residuals are::

    r_x   = Qx + A'y + G'z + q tau
    r_y   = Ax - b tau
    r_z   = Gx + s - h tau
    r_tau = kappa + q'x + b'y + h'z + x'Qx / tau

and the lane's *merit* is the largest of its scaled primal residual, dual residual
and gap, each relative to the size of the terms it is made of::

    max(|r_y|, |r_z|) / max(tau, tau |b|, tau |h|, |Ax|, |Gx|, |s|)
    |r_x|             / max(tau, tau |q|, |Qx|, |A'y|, |G'z|)
    gap / max(1, min(|pobj|, |dobj|)),      gap = max(s'z / tau^2, |pobj - dobj|)

(infinity norms). The objectives need no products of their own: with
``xbar = x / tau``, ``pobj = 1/2 xbar'Q xbar + q'xbar`` and
``pobj - dobj = (r_tau - kappa) / tau``.

A lane is SOLVED once its merit is below ``Settings.polish_tol``; it is
PRIMAL_INFEASIBLE when ``(y, z)`` is a Farkas certificate (``A'y + G'z ~ 0``,
``b'y + h'z < 0``) and DUAL_INFEASIBLE when ``x`` is a direction of unbounded
descent (``Qx ~ 0``, ``Ax ~ 0``, ``Gx <= ~0``, ``q'x < 0``), each product compared
with ``Settings.tol_inf`` times the size of its data, so that the tests do not change
when a problem is scaled. Those sizes (norms of ``q``, ``b``, ``h`` and of the
matrices) are constant: :func:`lane_constants` computes them once per solve.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ._kkt import mtv, mv, vdot
from ._problem import Problem
from ._types import Status

RUNNING = -1


class LaneConstants(NamedTuple):
    """Per-lane sizes of the data, each (B,), computed once (:func:`lane_constants`).

    Attributes
    ----------
    scale_p : ``max(1, |b|, |h|)``             scale_d : ``max(1, |q|)``
    eps_rhs : ``tol_inf max(|b|, |h|, tiny)``  eps_q : ``tol_inf max(|q|, tiny)``
    eps_mat : ``tol_inf max(|Q|, |A|, |G|, tiny)`` (largest absolute entries)
    """

    scale_p: Any
    scale_d: Any
    eps_rhs: Any
    eps_q: Any
    eps_mat: Any


def _norm(xp, v, device=None):
    """(lead,) infinity norm over all but the leading axis (0 for empty arrays)."""
    if v.shape[-1] == 0:
        return xp.zeros(v.shape[:1], dtype=v.dtype, device=device)
    axes = tuple(range(1, len(v.shape)))
    return xp.max(xp.abs(v), axis=axes)


def lane_constants(xp, prob: Problem, tol_inf: float) -> LaneConstants:
    """The constant sizes of each lane's data, shaped (B,)."""
    B = prob.bad.shape[0]
    one = xp.ones((B,), dtype=prob.dtype, device=prob.device)
    tiny = xp.finfo(prob.dtype).smallest_normal
    q = _norm(xp, prob.q, prob.device) * one
    rhs = xp.zeros_like(one)
    mat = _norm(xp, prob.Q, prob.device) * one
    for v, M in ((prob.b, prob.A), (prob.h, prob.G)):
        if v is not None:
            rhs = xp.maximum(rhs, _norm(xp, v, prob.device) * one)
            mat = xp.maximum(mat, _norm(xp, M, prob.device) * one)
    return LaneConstants(scale_p=xp.maximum(rhs, one), scale_d=xp.maximum(q, one),
                         eps_rhs=tol_inf * xp.clip(rhs, min=tiny),
                         eps_q=tol_inf * xp.clip(q, min=tiny),
                         eps_mat=tol_inf * xp.clip(mat, min=tiny))


class Residuals(NamedTuple):
    """The residuals of one iterate and the products they reuse.

    rx (B, n), ry (B, m) or None, rz (B, p) or None, rtau (B,); Qx, Ax, Gx (B, rows),
    Aty, Gtz (B, n) (None without the block); qx, xQx (B,) ``q'x`` and ``x'Qx``;
    byhz (B,) ``b'y + h'z``.
    """

    rx: Any
    ry: Any
    rz: Any
    rtau: Any
    Qx: Any
    Ax: Any
    Gx: Any
    Aty: Any
    Gtz: Any
    qx: Any
    xQx: Any
    byhz: Any


def residuals(xp, prob: Problem, x, y, z, s, tau, kappa) -> Residuals:
    """Residuals of the homogeneous embedding at ``(x, y, z, s, tau, kappa)``."""
    Qx = mv(prob.Q, x)
    qx, xQx = vdot(xp, prob.q, x), vdot(xp, x, Qx)
    t = tau[:, None]
    rx = Qx + prob.q * t
    ry = rz = Ax = Gx = Aty = Gtz = byhz = None
    if prob.m:
        Ax, Aty = mv(prob.A, x), mtv(prob.A, y)
        rx = rx + Aty
        ry = Ax - prob.b * t
        byhz = vdot(xp, prob.b, y)
    if prob.p:
        Gx, Gtz = mv(prob.G, x), mtv(prob.G, z)
        rx = rx + Gtz
        rz = Gx + s - prob.h * t
        hz = vdot(xp, prob.h, z)
        byhz = hz if byhz is None else byhz + hz
    rtau = kappa + qx + xQx / tau
    if byhz is not None:
        rtau = rtau + byhz
    return Residuals(rx, ry, rz, rtau, Qx, Ax, Gx, Aty, Gtz, qx, xQx, byhz)


def _norms(xp, *vectors):
    """Infinity norms (B,) of same-shaped (B, k) vectors, in one pass over their stack."""
    if len(vectors) == 1:
        return (xp.max(xp.abs(vectors[0]), axis=-1),)
    big = xp.max(xp.abs(xp.stack(vectors, axis=-1)), axis=1)
    return tuple(big[:, i] for i in range(len(vectors)))


def _vmax(xp, *vals):
    out = None
    for v in vals:
        if v is not None:
            out = v if out is None else xp.maximum(out, v)
    return out


def classify(xp, prob: Problem, c: LaneConstants, cfg, x, y, z, s, tau, kappa,
             res: Residuals):
    """Status (B,) int32 of each lane's iterate (RUNNING if none applies) and its merit (B,).

    ``c``: the lanes' :class:`LaneConstants`; ``cfg``: the ``Settings``; the iterate
    ``x`` (B, n), ``y`` (B, m), ``z``, ``s`` (B, p), ``tau``, ``kappa`` (B,) and its
    :class:`Residuals`.
    """
    nAty = nGtz = nry = nAx = ny = nrz = nGx = ns = nz = None
    n_vecs = [res.rx, res.Qx, x] + [v for v in (res.Aty, res.Gtz) if v is not None]
    nrx, nQx, nx, *ndual = _norms(xp, *n_vecs)
    if prob.m:
        nry, nAx, ny = _norms(xp, res.ry, res.Ax, y)
        nAty = ndual[0]
    if prob.p:
        nrz, nGx, ns, nz = _norms(xp, res.rz, res.Gx, s, z)
        nGtz = ndual[-1]
    # Primal and dual residuals over the sizes of their terms (both sides times tau).
    merit = nrx / _vmax(xp, tau * c.scale_d, nQx, nAty, nGtz)
    if prob.m or prob.p:
        merit = xp.maximum(merit, _vmax(xp, nry, nrz)
                           / _vmax(xp, tau * c.scale_p, nAx, nGx, ns))
    # The gap: pobj - dobj = (r_tau - kappa) / tau.
    pobj = (0.5 * res.xQx / tau + res.qx) / tau
    dgap = (res.rtau - kappa) / tau
    gap = xp.abs(dgap)
    if prob.p:
        gap = xp.maximum(gap, vdot(xp, s, z) / (tau * tau))
    gap_scale = xp.clip(xp.minimum(xp.abs(pobj), xp.abs(pobj - dgap)), min=1.0)
    merit = xp.maximum(merit, gap / gap_scale)

    # Dual infeasibility (unboundedness): x with Qx ~ 0, Ax ~ 0, Gx <= ~0, q'x < 0.
    big = _vmax(xp, nQx, nAx, None if nGx is None else xp.max(res.Gx, axis=-1))
    dinf = (res.qx < -c.eps_q * nx) & (big <= c.eps_mat * nx)
    status = xp.where(dinf, int(Status.DUAL_INFEASIBLE),
                      xp.full(tau.shape, RUNNING, dtype=xp.int32, device=prob.device))
    # Primal infeasibility: (y, z) with A'y + G'z ~ 0 and b'y + h'z < 0 (takes precedence).
    if prob.m or prob.p:
        yz = _vmax(xp, ny, nz)
        cert = ndual[0] if len(ndual) == 1 else xp.max(xp.abs(res.Aty + res.Gtz), axis=-1)
        pinf = (res.byhz < -c.eps_rhs * yz) & (cert <= c.eps_mat * yz)
        status = xp.where(pinf, int(Status.PRIMAL_INFEASIBLE), status)
    status = xp.where(merit <= cfg.polish_tol, int(Status.SOLVED), status)
    # (A comparison, not isfinite: NaN and inf both fail it.)
    status = xp.where(merit * tau < xp.inf, status, int(Status.NUMERICAL_ERROR))
    return status, merit
