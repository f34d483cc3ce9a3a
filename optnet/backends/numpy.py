"""NumPy backend: LAPACK batched Cholesky, SciPy batched triangular solves."""

from __future__ import annotations

import array_api_compat.numpy as xp
import numpy as np
import scipy.linalg

from .._ops import Ops
from ._eager import cholesky_per_lane, cond, while_loop

namespace = xp


def _cholesky(H, shifts):
    return cholesky_per_lane(xp, H, shifts, (np.linalg.LinAlgError,))


def _solve_triangular(L, R, transpose):
    return scipy.linalg.solve_triangular(L, R, lower=True, trans=1 if transpose else 0,
                                         check_finite=False)


def quiet():
    """Silence floating-point warnings: NaN/Inf in a failed lane is reported by its status."""
    return np.errstate(all="ignore")


def asarray(a):
    """Convert any array (or nested sequence) to a NumPy array."""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "__dlpack__") and not hasattr(a, "__array__"):
        return np.from_dlpack(a)
    return np.asarray(a)


ops = Ops(name="numpy", cholesky=_cholesky, solve_triangular=_solve_triangular,
          cond=cond, while_loop=while_loop)


def has_float64(device=None) -> bool:
    return True
