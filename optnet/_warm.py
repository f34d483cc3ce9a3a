"""Warm start: the interior point started from a given point (a previous solution).

An interior-point method cannot start on the boundary, where a previous optimum lies
(``s_i z_i = 0`` for every row): from there the first Newton directions would be
blocked by the rows at zero. The given point is therefore pushed into the interior
first, in the spirit of the shifted warm starts of Gondzio (1998) and Yildirim and
Wright (2002):

- ``x`` (and ``y``) are taken as given; ``s = h - G x`` is recomputed from the current
  data (which may have changed since the point was computed);
- every ``s_i`` and ``z_i`` is raised to at least ``delta = max(sqrt(mu),
  Settings.warm_shift)``, where ``mu`` is the mean complementarity ``s'z / p`` of the
  given point with negative parts clipped: rows far from the boundary keep their values,
  rows at it start at a distance of the order of the complementarity;
- ``tau = 1`` and ``kappa`` the mean complementarity of the pushed point, so that the
  homogeneous pair starts as centred as the others.

All of this happens on the equilibrated problem (``_scaling``), where rows and columns
have comparable sizes, so that one shift serves every row. Lanes whose given point is not
finite (a failed previous solve) start cold.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ._kkt import mv
from ._problem import Problem

KEYS = ("x", "z", "y")


class WarmPoint(NamedTuple):
    """A given starting point in lane shapes (B, k) (``None`` for a block not given)."""

    x: Any
    z: Any
    y: Any


def as_mapping(init) -> dict:
    """``init`` (a ``QPSolution``, or a mapping with ``"x"`` and optionally ``"z"``, ``"y"``)
    as a dict of its arrays, or ``ValueError``."""
    if init is None:
        return None
    if hasattr(init, "_fields") and all(hasattr(init, k) for k in KEYS):
        return {k: getattr(init, k) for k in KEYS}
    if isinstance(init, dict):
        extra = set(init) - set(KEYS)
        if extra or "x" not in init:
            raise ValueError(
                "init must be a QPSolution or a mapping with key 'x' and optionally 'z' and "
                f"'y'; received a mapping with keys {sorted(init)}.")
        return {k: init.get(k) for k in KEYS}
    raise ValueError("init must be a QPSolution or a mapping with key 'x' and optionally "
                     f"'z' and 'y'; received {type(init).__module__}.{type(init).__qualname__}.")


def lanes(xp, prob: Problem, init: dict) -> WarmPoint:
    """The given point in lane shapes and the problem's dtype, or ``ValueError`` naming
    ``init['x']`` (or ``'z'``, ``'y'``) with the expected and received shapes."""
    sizes = {"x": prob.n, "z": prob.p, "y": prob.m}
    out = {}
    for k in KEYS:
        a = init.get(k)
        if a is None or sizes[k] == 0:
            out[k] = None
            continue
        want = (*prob.batch_shape, sizes[k])
        got = tuple(int(d) for d in a.shape)
        if got != want:
            raise ValueError(
                f"init['{k}'] must have shape {want} (the batch shape of the problems, then "
                f"{'n' if k == 'x' else 'p' if k == 'z' else 'm'}); received shape {got}.")
        if not xp.isdtype(a.dtype, "real floating"):
            raise ValueError(f"init['{k}'] must be a real floating array; received dtype "
                             f"{a.dtype}.")
        out[k] = xp.reshape(xp.astype(a, prob.dtype), (-1, sizes[k]))
    return WarmPoint(**out)


def scaled(warm: WarmPoint, sc) -> WarmPoint:
    """The given point on the equilibrated problem: ``x~ = x / d``, ``y~ = y / f``,
    ``z~ = z / e`` (the inverse of ``_scaling.unscale``)."""
    return WarmPoint(
        x=warm.x / sc.d,
        z=None if warm.z is None or sc.e is None else warm.z / sc.e,
        y=None if warm.y is None or sc.f is None else warm.y / sc.f)


def pushed(xp, prob: Problem, cfg, warm: WarmPoint, cold):
    """The start ``w`` (B, n + m + 2p + 2) of the lanes with a finite given point, the cold
    start ``cold`` (an ``Iterate``-like ``(x, y, z, s)`` of (B, k) arrays) elsewhere; see the
    module docstring. Returns ``(x, y, z, tau, s, kappa)`` as (B, k) arrays."""
    B = prob.bad.shape[0]
    x = warm.x
    y = cold[1] if warm.y is None else warm.y
    use = xp.all(xp.isfinite(x), axis=-1)
    if prob.m and warm.y is not None:
        use = use & xp.all(xp.isfinite(y), axis=-1)
    one = xp.ones((B, 1), dtype=prob.dtype, device=prob.device)
    if prob.p:
        s = prob.h - mv(prob.G, xp.where(use[:, None], x, 0.0))
        z = cold[2] if warm.z is None else warm.z
        if warm.z is not None:
            use = use & xp.all(xp.isfinite(z), axis=-1)
        use = use & xp.all(xp.isfinite(s), axis=-1)
        mu = xp.mean(xp.clip(s, min=0.0) * xp.clip(z, min=0.0), axis=-1)
        delta = xp.maximum(xp.sqrt(xp.where(use, mu, 0.0)), cfg.warm_shift)[:, None]
        s = xp.maximum(s, delta)
        z = xp.maximum(z, delta)
        kappa = xp.mean(s * z, axis=-1)[:, None]
    else:
        s = z = cold[3]
        kappa = one
    keep = use[:, None]
    x = xp.where(keep, x, cold[0])
    y = xp.where(keep, y, cold[1]) if prob.m else cold[1]
    if prob.p:
        z = xp.where(keep, z, cold[2])
        s = xp.where(keep, s, cold[3])
        kappa = xp.where(keep, kappa, 1.0)
    return x, y, z, one, s, kappa
