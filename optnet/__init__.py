"""optnet: a differentiable, batched quadratic-program layer for every array library.

>>> import numpy as np, optnet
>>> sol = optnet.solve(np.eye(2), np.array([1.0, -1.0]), G=-np.eye(2), h=np.zeros(2))
>>> [round(float(v), 6) + 0.0 for v in sol.x], int(sol.status)
([0.0, 1.0], 0)
"""

from ._adjoint import jvp, vjp
from ._solve import solve
from ._types import QPError, QPGrads, QPSolution, QPTangents, Status
from ._version import __version__ as __version__

__all__ = ["solve", "vjp", "jvp", "Status", "QPSolution", "QPGrads", "QPTangents", "QPError"]


def __getattr__(name):
    # optnet.torch / optnet.jax are imported on first use only: ``import optnet``
    # never imports a framework.
    if name in ("torch", "jax"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
