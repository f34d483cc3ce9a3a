"""JAX backend (CPU/GPU): ``lax.while_loop``/``lax.cond``, so the core runs under jit and vmap.

float64 needs ``jax.config.update("jax_enable_x64", True)``; without it every
computation runs in float32 (documented, with float32 tolerances).
"""

from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._ops import Ops, blank_lanes, lane_shift

namespace = jnp


def _chol(H, shift, scale):
    eye = jnp.eye(H.shape[-1], dtype=H.dtype)
    if not isinstance(shift, float) and jnp.ndim(shift) == 0:
        shift = jnp.asarray(shift, dtype=H.dtype)[None]          # one shift for every lane
    L = jnp.linalg.cholesky(H + eye * (lane_shift(shift) * scale)[:, None, :])
    # A failed factorization comes back as NaN throughout (lax.linalg.cholesky), and
    # LAPACK fails one whose diagonal meets a NaN or a non-positive pivot, which any NaN
    # or infinite entry of H leads to: the diagonal tells, without a pass over L.
    ok = jnp.all(jnp.isfinite(jnp.diagonal(L, axis1=-2, axis2=-1)), axis=-1)
    return L, ok


def _cholesky(H, shifts, factor_dtype, scale, skip, overwrite=False):
    """Cholesky of ``H + shift diag(scale)`` with the first of ``shifts`` that works, lane
    by lane (see ``_eager.cholesky_per_lane``).

    The first shift is tried once; the others are a ``while_loop`` over their index that
    runs while some lane has failed: two Cholesky calls in the trace whatever the number
    of shifts (a Python loop of ``cond``s would compile one per shift, at every
    factorization site), and where the first try succeeds in every lane, as it nearly
    always does, the loop takes no step (a step selects between two factors of every lane).
    """
    H, scale = blank_lanes(jnp, H.astype(factor_dtype), scale.astype(factor_dtype), skip)
    eye = jnp.eye(H.shape[-1], dtype=H.dtype)
    if len(shifts) == 1:
        L, ok = _chol(H, shifts[0], scale)
        if not isinstance(shifts[0], float):
            # The interior point's per-lane try: a failed lane's factor is never used
            # (``Ops.cholesky``), and selecting the identity would be a pass over L.
            return L, ok
    else:
        tries = jnp.stack([jnp.asarray(s, dtype=H.dtype) for s in shifts])

        def more(carry):
            i, _, ok = carry
            return (i < tries.shape[0]) & ~jnp.all(ok)

        def attempt(carry):
            i, L, ok = carry
            L2, ok2 = _chol(H, tries[i], scale)
            return i + 1, jnp.where(ok[:, None, None], L, L2), ok | ok2

        L, ok = _chol(H, tries[0], scale)
        _, L, ok = lax.while_loop(more, attempt, (jnp.asarray(1), L, ok))
    L = jnp.where(ok[:, None, None], L, eye)
    return L, ok      # in factor_dtype: a float32 factor solves in float32


def _solve_triangular(L, R, transpose):
    # lax's own solve, not jax.scipy's: that one vectorizes over the batch, with a
    # broadcast and a squeeze around solves that are kernels XLA must compile.
    X = R.astype(L.dtype)
    if L.shape[:-2] != X.shape[:-2]:
        shape = jnp.broadcast_shapes(L.shape[:-2], X.shape[:-2])
        L = jnp.broadcast_to(L, (*shape, *L.shape[-2:]))
        X = jnp.broadcast_to(X, (*shape, *X.shape[-2:]))
    X = lax.linalg.triangular_solve(L, X, left_side=True, lower=True, transpose_a=transpose)
    return X.astype(R.dtype)


def _cond(pred, true_fn, false_fn):
    return lax.cond(pred, lambda _: true_fn(), lambda _: false_fn(), None)


# XLA's loop emitters for CPU fusions instead of its newer MLIR fusion emitters: they
# compile the solver's programs in half the time and run them as fast or faster
# (benchmarks/RESULTS.md, 2026-12-04).
COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


@functools.cache
def compiler_options() -> dict | None:
    """XLA options for the programs optnet compiles itself (``optnet.solve`` on JAX arrays,
    ``optnet.torch.solve(compiled="jax")``; a user's own ``jax.jit`` compiles with the
    user's options): :data:`COMPILER_OPTIONS` where this jaxlib knows them, else None (the
    probe compiles a one-operation program, once per process)."""
    return COMPILER_OPTIONS if accepts(COMPILER_OPTIONS) else None


def accepts(options: dict) -> bool:
    """Whether XLA compiles a program with ``options`` (it raises at compile time for an
    option it does not know)."""
    try:
        jax.jit(lambda a: a + 1, compiler_options=options)(jnp.zeros(()))
    except Exception:
        return False
    return True


def asarray(a):
    """Convert any array (or nested sequence) to a JAX array."""
    return jnp.asarray(a)


def has_float64(device=None) -> bool:
    return bool(jax.config.jax_enable_x64)


def quiet():
    return contextlib.nullcontext()


def _put_lanes(full, part, idx, inplace=False):
    # A functional update (XLA writes in place where the old array is dead, as in a loop's
    # carry); indices out of range (``_lanes.first_lanes``'s padding) are dropped.
    return full.at[idx].set(part.astype(full.dtype), mode="drop")


def _abstract_zeros(fn):
    return [jnp.zeros(a.shape, a.dtype) for a in jax.eval_shape(fn)]


ops = Ops(name="jax", cholesky=_cholesky, solve_triangular=_solve_triangular,
          cond=_cond, while_loop=lax.while_loop, abstract_zeros=_abstract_zeros,
          put_lanes=_put_lanes)


def to_host(a):
    return np.asarray(a)
