"""array-api-strict backend: the bare standard, the proof the core needs nothing more.

Only the standard's ``linalg`` extension is used: ``cholesky`` for the factor and
``solve`` for the triangular solves (an LU of a triangular matrix: slower than a
true triangular solve, exact all the same). It exists for testing.
"""

from __future__ import annotations

import array_api_strict as xp
import numpy as np

from .._ops import Ops
from ._eager import cholesky_per_lane, cond, while_loop

namespace = xp


def _cholesky(H, shifts, factor_dtype, scale, skip, overwrite=False):
    return cholesky_per_lane(xp, H, shifts, (np.linalg.LinAlgError,), factor_dtype, scale, skip)


def _solve_triangular(L, R, transpose):
    if transpose:
        L = xp.matrix_transpose(L)
    return xp.linalg.solve(L, R)


def quiet():
    """Silence floating-point warnings: NaN/Inf in a failed lane is reported by its status."""
    return np.errstate(all="ignore")


def asarray(a):
    """Convert any array (or nested sequence) to an array-api-strict array, in C order.

    NumPy's reductions sum in an order that follows the memory layout, so a
    Fortran-ordered or strided input would round differently from its contiguous
    copy; one layout makes the result depend on the values alone.
    """
    if type(a).__module__.startswith("array_api_strict"):
        host = np.from_dlpack(a)
        if host.flags.c_contiguous:
            return a
    elif isinstance(a, np.ndarray) or not hasattr(a, "__dlpack__"):
        host = np.asarray(a)
    else:
        try:
            host = np.from_dlpack(a)
        except Exception:  # pragma: no cover - device/dtype the protocol refuses
            host = np.asarray(a)
    return xp.asarray(np.asarray(host, order="C"))   # (0-d stays 0-d)


ops = Ops(name="array_api_strict", cholesky=_cholesky, solve_triangular=_solve_triangular,
          cond=cond, while_loop=while_loop, eager=True)


def has_float64(device=None) -> bool:
    return True


def to_host(a):
    return np.asarray(a)
