"""The solver's settings: every tuned threshold, with dtype-aware defaults.

Each field's rationale (and the measurements behind it) is in ``docs/algorithm.md``
and ``benchmarks/RESULTS.md``; the code that uses a field names it.
"""

from __future__ import annotations

import math
import operator
from typing import NamedTuple


class Settings(NamedTuple):
    """Solver settings (one per solve; Python numbers, never arrays).

    Attributes
    ----------
    tol : float
        Relative tolerance on the residuals and the gap.
    polish_tol : float
        Merit at which a lane stops for its first active-set polish (>= tol).
    tol_inf : float
        Tolerance of the infeasibility certificates.
    max_iter : int
        Interior-point iteration limit.
    delta : float
        KKT regularization, relative to the diagonal.
    shift_growth : float
        Factor by which a lane's regularization grows after a failed factorization.
    shift_raises : int
        Failed factorizations a lane may have before it is a NUMERICAL_ERROR.
    refine : int
        Iterative-refinement steps of the interior point's solves at level 1.
    refine_top : int
        Refinement steps of the interior point's solves at the top precision level, which
        the driver climbs to where one step leaves a solve less accurate than the lane's
        merit needs.
    polish_refine : int
        Refinement steps of the polish's and the derivatives' solves.
    accuracy_margin : float
        A solve is accurate enough while its relative residual is below this times
        the lane's merit; the precision level climbs when it is not.
    step_fraction : float
        Fraction of the step to the boundary taken.
    min_step : float
        A lane whose step is shorter (or not a number) has stalled.
    centrality : float
        gamma of the neighbourhood ``min(s_i z_i, tau kappa) >= gamma mu`` (0: off).
    fractions : tuple of float
        Step fractions the neighbourhood safeguard tries (increasing).
    patience : int
        Iterations without halving the merit before a nearly solved lane stalls.
    stall_merit : float
        A lane can stall only once its best merit is below ``tol ** stall_merit``.
    stall_near : float
        Within this factor of ``tol``, ``stall_fast`` iterations without progress stall.
    stall_fast : int
        The patience near the tolerance.
    sync_every : int
        Eager backends read the loop's state on the host once every this many iterations
        (whether lanes still run, whether the precision must climb, and lane compaction).
    warm_shift : float
        A warm start (``init``) raises every slack and multiplier to at least this (or
        the square root of the given point's mean complementarity, if larger), on the
        equilibrated problem (``_warm``).
    psd_tol : float
        Convexity margin: a lane is NONCONVEX where its unit-diagonal ``Q`` plus this times
        the identity has no Cholesky factor (``_pipeline._nonconvex``).
    equilibrate_passes : int
        Passes of Ruiz's equilibration (``_scaling``).
    equilibrate_clip : tuple of float
        ``(lo, hi)``: the row and column norms each pass divides by are clipped to it.
    equilibrate_spread : float
        Lanes whose row and column norms lie within this factor of each other are not
        equilibrated.
    mixed_min_n : int
        float64 problems with at least this many variables iterate with float32 factors
        first, on backends where those pay (``_pdipm.iteration_problem``).
    mixed_range : tuple of float
        ``(lo, hi)``: ... and only where every lane's largest matrix entry lies in it and
        its largest vector entry is at most ``hi``.
    polish_max_active : int
        A lane polished early (at ``polish_tol``) whose guess of the active set has more
        than this many times ``n`` rows (equalities included) iterates on instead.
    polish_block : int
        Traced backends: a batch of more than this many lanes makes its polish passes
        on blocks of lanes, those that still have a pass to make, of at most this many
        lanes or ``B / polish_blocks``, whichever is more (``_polish.block_size``; 0:
        on the whole batch).
    polish_blocks : int
        See ``polish_block``.
    """

    tol: float
    polish_tol: float
    tol_inf: float
    max_iter: int
    delta: float
    shift_growth: float
    shift_raises: int
    refine: int
    refine_top: int
    polish_refine: int
    accuracy_margin: float
    step_fraction: float
    min_step: float
    centrality: float
    fractions: tuple
    patience: int
    stall_merit: float
    stall_near: float
    stall_fast: int
    sync_every: int
    warm_shift: float
    psd_tol: float
    equilibrate_passes: int
    equilibrate_clip: tuple
    equilibrate_spread: float
    mixed_min_n: int
    mixed_range: tuple
    polish_max_active: int
    polish_block: int
    polish_blocks: int


def _check_tol(tol) -> float:
    """``tol`` as a float in (0, 1), or ``ValueError``."""
    value = None
    if not isinstance(tol, bool) and getattr(tol, "ndim", 0) == 0:
        try:
            value = float(tol)
        except (TypeError, ValueError):
            value = None
    if value is None or not (0.0 < value < 1.0):
        raise ValueError(f"tol must be a real number in (0, 1); received {tol!r} "
                         f"({type(tol).__name__}).")
    return value


def _check_max_iter(max_iter) -> int:
    """``max_iter`` as a positive int, or ``ValueError`` (no silent truncation of 2.5)."""
    try:
        value = operator.index(max_iter)
    except TypeError:  # 100.0 is fine, 2.5 is not
        value = None
        if isinstance(max_iter, float) and math.isfinite(max_iter) and max_iter.is_integer():
            value = int(max_iter)
    if isinstance(max_iter, bool) or value is None or value < 1:
        raise ValueError(f"max_iter must be a positive integer; received {max_iter!r} "
                         f"({type(max_iter).__name__}).")
    return value


# The floor of a warm start's slacks and multipliers (see docs/algorithm.md, "Warm start").
WARM_SHIFT = 1e-2

# The first polish is tried once the merit is below sqrt(tol), at most this (see
# docs/algorithm.md, "Early polish").
POLISH_TOL_CAP = 1e-5


def default_settings(xp, prob, tol=None, max_iter=None) -> Settings:
    """Dtype-aware defaults (see ``docs/algorithm.md`` for each value's rationale).

    float64: tol 1e-10. float32 data, iterated in float64 with float32 factors: tol
    1e-6. float32 throughout (a backend without float64): tol 3e-5.
    """
    single = prob.factor_dtype == xp.float32
    pure_single = prob.dtype == xp.float32
    if tol is None:
        tol = 3e-5 if pure_single else (1e-6 if single else 1e-10)
    if max_iter is None:
        max_iter = 100
    tol = _check_tol(tol)
    max_iter = _check_max_iter(max_iter)
    many_rows = prob.m + prob.p > 4 * prob.n
    return Settings(
        tol=tol,
        polish_tol=tol if many_rows else max(tol, min(math.sqrt(tol), POLISH_TOL_CAP)),
        tol_inf=max(tol, 1e-8) if not single else max(tol, 1e-5),
        max_iter=max_iter,
        delta=1e-7 if pure_single else 1e-15,
        shift_growth=1e3,
        shift_raises=3,
        refine=4 if pure_single else (1 if many_rows else 0),
        refine_top=3,
        polish_refine=5 if pure_single else 2,
        accuracy_margin=1e-2,
        step_fraction=0.99,
        min_step=1e-10,
        centrality=1e-2,
        fractions=(0.1, 0.25, 0.5, 0.75, 0.9, 1.0),
        patience=6,
        stall_merit=0.3,
        stall_near=100.0,
        stall_fast=2,
        sync_every=4,
        warm_shift=WARM_SHIFT,
        psd_tol=1e-3,
        equilibrate_passes=10,
        equilibrate_clip=(1e-4, 1e4),
        equilibrate_spread=100.0,
        mixed_min_n=64,
        mixed_range=(1e-10, 1e10),
        polish_max_active=2,
        polish_block=32,
        polish_blocks=4,
    )
