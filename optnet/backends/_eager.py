"""Building blocks shared by the eager backends (NumPy, array-api-strict, CuPy, torch)."""

from __future__ import annotations

from array_api_compat import device

from .._ops import blank_lanes, lane_shift


def while_loop(cond, body, state):
    """A Python loop with ``lax.while_loop`` semantics."""
    while bool(cond(state)):
        state = body(state)
    return state


def cond(pred, true_fn, false_fn):
    """A Python ``if`` with ``lax.cond`` semantics."""
    return true_fn() if bool(pred) else false_fn()


def cholesky_per_lane(xp, H, shifts, raises, factor_dtype, scale, skip):
    """Batched Cholesky of ``H + shift diag(scale)`` that isolates failures lane by lane.

    Tries the whole batch with ``shifts[0]``; if the library raises (one bad
    lane makes LAPACK-style batched routines fail as a whole) it goes lane by
    lane, escalating through ``shifts`` for a lane that fails. Lanes that fail
    with every shift (or whose factor is not finite) get the identity and
    ``ok = False``.

    Parameters
    ----------
    xp : namespace
    H : (B, k, k)
    shifts : tuple of float, increasing, or of one (B,) array (a shift per lane)
    raises : tuple of exception types that signal a non-positive-definite matrix
    factor_dtype : dtype to factor in; the factor is returned in ``H.dtype``.
    scale : (B, k) positive
    skip : (B,) bool
        Lanes not factored (the identity's factor, ``ok`` True).
    """
    if bool(xp.any(skip)):
        H, scale = blank_lanes(xp, H, scale, skip)
    out_dtype = H.dtype
    if factor_dtype != H.dtype:
        H = xp.astype(H, factor_dtype)
        scale = xp.astype(scale, factor_dtype)
    k = H.shape[-1]
    eye = xp.eye(k, dtype=H.dtype, device=device(H))
    try:
        L = xp.linalg.cholesky(H + eye * (lane_shift(shifts[0]) * scale)[:, None, :])
    except raises:
        rows = []
        for i in range(H.shape[0]):
            Li = xp.full((k, k), xp.nan, dtype=H.dtype, device=device(H))
            for shift in shifts:
                try:
                    Li = xp.linalg.cholesky(H[i, ...] + eye * (lane_shift(shift, i)
                                                               * scale[i, ...]))
                    break
                except raises:
                    continue
            rows.append(Li)
        L = xp.stack(rows, axis=0)
    ok = xp.all(xp.isfinite(L), axis=(-2, -1))
    L = xp.where(ok[:, None, None], L, eye)
    return xp.astype(L, out_dtype), ok
