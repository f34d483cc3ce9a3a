"""JAX backend (CPU/GPU): ``lax.while_loop``/``lax.cond``, so the core runs under jit and vmap.

float64 needs ``jax.config.update("jax_enable_x64", True)``; without it every
computation runs in float32 (documented, with float32 tolerances).
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.linalg import solve_triangular as _jsolve_triangular

from .._ops import Ops, blank_lanes, lane_shift

namespace = jnp


def _chol(H, shift, scale):
    eye = jnp.eye(H.shape[-1], dtype=H.dtype)
    L = jnp.linalg.cholesky(H + eye * (lane_shift(shift) * scale)[:, None, :])
    ok = jnp.all(jnp.isfinite(L), axis=(-2, -1))
    return L, ok


def _cholesky(H, shifts, factor_dtype, scale, skip, overwrite=False):
    H, scale = blank_lanes(jnp, H.astype(factor_dtype), scale.astype(factor_dtype), skip)
    eye = jnp.eye(H.shape[-1], dtype=H.dtype)
    L, ok = _chol(H, shifts[0], scale)
    for shift in shifts[1:]:
        def retry(args, shift=shift):
            L, ok = args
            L2, ok2 = _chol(H, shift, scale)
            return jnp.where(ok[:, None, None], L, L2), ok | ok2

        L, ok = lax.cond(jnp.all(ok), lambda args: args, retry, (L, ok))
    L = jnp.where(ok[:, None, None], L, eye)
    return L, ok      # in factor_dtype: a float32 factor solves in float32


def _solve_triangular(L, R, transpose):
    X = _jsolve_triangular(L, R.astype(L.dtype), lower=True, trans=1 if transpose else 0)
    return X.astype(R.dtype)


def _cond(pred, true_fn, false_fn):
    return lax.cond(pred, lambda _: true_fn(), lambda _: false_fn(), None)


def asarray(a):
    """Convert any array (or nested sequence) to a JAX array."""
    return jnp.asarray(a)


def has_float64(device=None) -> bool:
    return bool(jax.config.jax_enable_x64)


def quiet():
    return contextlib.nullcontext()


ops = Ops(name="jax", cholesky=_cholesky, solve_triangular=_solve_triangular,
          cond=_cond, while_loop=lax.while_loop)


def to_host(a):
    return np.asarray(a)
