"""Ruiz equilibration of the problem data for the interior-point iteration.

Badly scaled data (coefficients spanning 1e-6 .. 1e6, multipliers up to 1e8)
make the interior point's KKT systems far worse conditioned than the problem
is, and its stopping tests meaningless row by row. The iteration therefore runs
on an equivalent, equilibrated problem; the polish, the residuals and the
derivatives use the original one.

Derivation
----------
With positive diagonal scalings ``D`` (variables), ``E`` (inequality rows) and
``F`` (equality rows), substitute ``x = D x~``::

    min  1/2 x~' (D Q D) x~ + (D q)' x~
    s.t. (F A D) x~ = F b,    (E G D) x~ <= E h.

Its KKT conditions are those of the original problem multiplied by ``D``
(stationarity), ``F`` and ``E`` (feasibility), so a solution ``(x~, y~, z~, s~)``
of the scaled problem gives the original one as::

    x = D x~,   y = F y~,   z = E z~,   s = s~ / E.

The homogeneous embedding's ``tau`` and ``kappa`` are unchanged, and a
certificate maps the same way (``z >= 0`` and the signs of ``b'y + h'z`` and
``q'x`` are preserved).

Ruiz's method (Ruiz 2001; as used by OSQP, Stellato et al. 2020) makes every
column and row of ``[[Q, A', G'], [A, 0, 0], [G, 0, 0]]`` have infinity norm near
1 by repeatedly dividing each by the square root of its norm
(``Settings.equilibrate_passes``, 10). Norms below ``1e-4`` or above ``1e4``
(``Settings.equilibrate_clip``) are clipped to that range in each pass,
and zero rows and columns (``h = +inf`` rows, ``Q = 0``) are left alone.

Measured choices (``benchmarks/hard_qps.py``, 30 seeds per class): a lane whose
column and row norms already lie within a factor 100 (``Settings.equilibrate_spread``)
of each other
is not scaled (on the OptNet paper's random QPs equilibration costs an
iteration, 12 / 17 median / max instead of 11 / 16); and the cost is not
rescaled (OSQP's cost factor ``1 / max(mean_j |Q~_:j|, |q~|)`` halved the
iterations on badly scaled problems but left 5 of 30 stalling, where the
multipliers reach 1e8). Without equilibration 8 of 30 badly scaled problems
failed (NUMERICAL_ERROR, 26 / 36 iterations); with it all 30 solve (20 / 29).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from . import _lanes
from ._problem import Problem


class Scaling(NamedTuple):
    """Diagonal scalings of one equilibrated batch (lead dim 1 where all data are shared).

    Attributes
    ----------
    d : (1|B, n)           variables: ``x = d * x~``
    e : (1|B, p) or None   inequality rows
    f : (1|B, m) or None   equality rows
    """

    d: Any
    e: Any
    f: Any


def _inv_sqrt_norm(xp, norm, clip):
    """``1 / sqrt(norm)`` with the norm clipped to ``clip``; 1 where it is zero."""
    lo, hi = clip
    clipped = xp.clip(norm, lo, hi)
    return xp.where(norm > 0, 1.0 / xp.sqrt(clipped), 1.0)


def equilibrate(xp, prob: Problem, cfg, eager: bool = False,
                while_loop=None) -> tuple[Problem, Scaling]:
    """Return the equilibrated problem and its scaling (see the module docstring).

    Lanes are independent: each gets its own scaling from its own data (where
    ``Q``, ``G`` and ``A`` are all shared by the batch, so is the scaling).
    ``cfg``: the ``Settings`` (``equilibrate_passes``, ``equilibrate_clip``,
    ``equilibrate_spread``). Lanes whose column and row norms lie within a factor
    ``equilibrate_spread`` of each other are left as they are. With ``eager``
    (concrete arrays) only the lanes that need it are equilibrated, and a batch with
    none is returned unchanged.
    With ``while_loop`` (``ops.while_loop`` of a traced backend) the passes after the
    first are one loop in the program rather than nine copies of a pass.
    """
    Q, G, A = prob.Q, prob.G, prob.A
    B = prob.bad.shape[0]
    leads = [M.shape[0] for M in (Q, G, A) if M is not None]
    L = B if B in leads else 1     # (B may be 0: an empty batch)
    aQ = xp.abs(Q)
    aG = None if G is None else xp.abs(G)
    aA = None if A is None else xp.abs(A)

    def ones(k):
        return xp.ones((L, k), dtype=prob.dtype, device=prob.device)

    def norms(d, e, f):
        # Column norms of the scaled KKT matrix's variable block and row norms of
        # its constraint blocks, all updated at once.
        col = xp.max(d[:, :, None] * aQ, axis=-2) * d
        row_e = row_f = None
        if aG is not None:
            sG = e[:, :, None] * aG
            col = xp.maximum(col, xp.max(sG, axis=-2) * d)
            row_e = xp.max(sG * d[:, None, :], axis=-1)
        if aA is not None:
            sA = f[:, :, None] * aA
            col = xp.maximum(col, xp.max(sA, axis=-2) * d)
            row_f = xp.max(sA * d[:, None, :], axis=-1)
        return col, row_e, row_f

    def one_pass(d, e, f, col, row_e, row_f):
        clip = cfg.equilibrate_clip
        d = d * _inv_sqrt_norm(xp, col, clip)
        e = None if row_e is None else e * _inv_sqrt_norm(xp, row_e, clip)
        f = None if row_f is None else f * _inv_sqrt_norm(xp, row_f, clip)
        return d, e, f

    d = ones(prob.n)
    e = None if G is None else ones(prob.p)
    f = None if A is None else ones(prob.m)
    col, row_e, row_f = norms(d, e, f)
    given = [v for v in (col, row_e, row_f) if v is not None]
    spread = _spread(xp, xp.concat(given, axis=-1) if len(given) > 1 else col)
    if eager:
        part = _equilibrate_some(xp, prob, cfg, spread > cfg.equilibrate_spread,
                                 Scaling(d, e, f))
        if part is not None:
            return part
    d, e, f = one_pass(d, e, f, col, row_e, row_f)
    if while_loop is None:
        for _ in range(cfg.equilibrate_passes - 1):
            d, e, f = one_pass(d, e, f, *norms(d, e, f))
    else:
        def body(carry):
            k, d, e, f = carry
            return (k + 1, *one_pass(d, e, f, *norms(d, e, f)))

        k0 = xp.asarray(1, dtype=xp.int32, device=prob.device)
        _, d, e, f = while_loop(lambda c: c[0] < cfg.equilibrate_passes, body, (k0, d, e, f))
    keep = (spread <= cfg.equilibrate_spread)[:, None]
    d = xp.where(keep, 1.0, d)
    e = None if e is None else xp.where(keep, 1.0, e)
    f = None if f is None else xp.where(keep, 1.0, f)
    return _apply(prob, d, e, f), Scaling(d, e, f)


def _apply(prob: Problem, d, e, f) -> Problem:
    """The problem scaled by ``d`` (variables), ``e`` (inequality rows), ``f`` (equality rows)."""
    G, A = prob.G, prob.A
    return prob._replace(
        Q=d[:, :, None] * prob.Q * d[:, None, :],
        q=d * prob.q,
        G=None if G is None else e[:, :, None] * G * d[:, None, :],
        h=None if G is None else e * prob.h,
        A=None if A is None else f[:, :, None] * A * d[:, None, :],
        b=None if A is None else f * prob.b,
    )


def _equilibrate_some(xp, prob: Problem, cfg, need, unit: Scaling):
    """Eager shortcut: equilibrate only the lanes that ``need`` it (B,), or return None
    to go on with the whole batch. ``unit`` holds scalings of ones."""
    B = prob.bad.shape[0]
    count = int(xp.sum(xp.astype(need, xp.int32)))
    if count == 0:
        return prob, unit
    if unit.d.shape[0] != B or B < 2 or 2 * count > B:
        return None
    idx = xp.nonzero(need)[0]
    _, part = equilibrate(xp, _lanes.take_problem(xp, prob, idx, B), cfg)
    d, e, f = _lanes.put_state(xp, tuple(unit), tuple(part), idx, B)
    return _apply(prob, d, e, f), Scaling(d, e, f)


def _spread(xp, norms):
    """``max / min`` of the positive entries of ``norms`` (L, k), per lane (1 if none)."""
    big = xp.max(norms, axis=-1)
    small = xp.min(xp.where(norms > 0, norms, big[:, None]), axis=-1)
    return xp.where(small > 0, big / xp.where(small > 0, small, 1.0), 1.0)


def unscale(xp, sc: Scaling, x, y, z, s):
    """Map a point of the equilibrated problem back: ``(x, y, z, s)``, each (B, k)."""
    x = sc.d * x
    y = y if sc.f is None else sc.f * y
    if sc.e is not None:
        z = sc.e * z
        s = s / sc.e
    return x, y, z, s
