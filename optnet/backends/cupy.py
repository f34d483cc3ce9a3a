"""CuPy backend (NVIDIA GPUs): cuSOLVER batched Cholesky; solves by products with L^{-1}.

``cupyx.scipy.linalg.solve_triangular`` is not batched, so, as on NumPy, each
Cholesky factor is inverted once per factorization (a batched inverse) and
every solve is one batched matrix product; iterative refinement absorbs the
accuracy cost. A batched factorization that fails in some lane is retried
lane by lane, with increasing shifts, for that call only.
"""

from __future__ import annotations

import contextlib

import array_api_compat.cupy as xp
import cupy
import cupyx

from .._ops import Ops
from ._eager import cholesky_per_lane, cond, while_loop

namespace = xp


def _cholesky(H, shifts, factor_dtype, scale, skip, overwrite=False):
    """The factor is ``L^{-1}`` (B, k, k), in ``H.dtype``."""
    with cupyx.errstate(linalg="raise"):
        L, ok = cholesky_per_lane(xp, H, shifts, (cupy.linalg.LinAlgError,), factor_dtype, scale,
                                  skip)
    inv = cupy.linalg.inv(L.astype(factor_dtype, copy=False))
    good = cupy.all(cupy.isfinite(inv), axis=(-2, -1))
    eye = cupy.eye(H.shape[-1], dtype=inv.dtype)
    inv = cupy.where(good[:, None, None], inv, eye)
    return inv.astype(H.dtype, copy=False), ok & good


def _solve_triangular(Linv, R, transpose):
    return (cupy.swapaxes(Linv, -1, -2) if transpose else Linv) @ R


def asarray(a):
    """Convert any array (or nested sequence) to a CuPy array on the current device."""
    if isinstance(a, cupy.ndarray):
        return a
    if hasattr(a, "__cuda_array_interface__") or hasattr(a, "__dlpack__"):
        try:
            return cupy.from_dlpack(a)
        except Exception:  # a host array: copy it over
            pass
    return cupy.asarray(a)


def has_float64(device=None) -> bool:
    return True


def quiet():
    return contextlib.nullcontext()


ops = Ops(name="cupy", cholesky=_cholesky, solve_triangular=_solve_triangular,
          cond=cond, while_loop=while_loop, eager=True)


def to_host(a):
    return cupy.asnumpy(a)
