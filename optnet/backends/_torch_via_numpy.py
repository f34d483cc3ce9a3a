"""Small problems in CPU torch tensors, solved through NumPy views of them.

The iteration is a few hundred small array operations per step whatever the problem's
size; torch spends several microseconds of dispatch on each, NumPy about one. Below a
size at which the arithmetic takes over, the NumPy backend therefore solves CPU
tensors (on zero-copy views of them) and its solution comes back as tensors: ``x``,
``z``, ``y`` and the rest, and the context the derivatives need, whose factorization
(the NumPy backend keeps inverse Cholesky factors) then solves by torch products. So
``optnet.torch.solve``'s backward and forward mode, and ``torch.func`` over them, run
in torch as before. Measurements: ``benchmarks/torch_route.py``, ``benchmarks/RESULTS.md``.

Only plain strided float32/float64 CPU tensors outside any ``torch.func`` transform
are routed; CUDA tensors, other dtypes and wrapped tensors stay on the torch path.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .._problem import CORE_RANK
from . import load

# Problems of at most this many entries in their stacked matrices, batch * (n + m + p) * n,
# go through NumPy (0: never). Forward + backward on the paper's QP, 2-core CPU: NumPy
# 2.0-2.5x faster at n = 10 (batch 1 to 128), 1.1-1.5x from 57 600 to 262 144 entries
# (n = 30 to 64), slower from 320 000 on (n = 100, batch 16: 0.89x; batch 128: 0.58x),
# where torch's multithreaded products pay.
NUMPY_MAX_ENTRIES = 300_000

_TORCH_DTYPE = {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32,
                np.dtype(np.int32): torch.int32, np.dtype(np.int64): torch.int64,
                np.dtype(np.bool_): torch.bool}
_PLAIN = (torch.Tensor, torch.nn.Parameter)


def _wrapped(t) -> bool:
    functorch = getattr(torch._C, "_functorch", None)
    return functorch is not None and functorch.is_functorch_wrapped_tensor(t)


def _entries(args: dict) -> int | None:
    """batch * (n + m + p) * n of the inputs, or None where their shapes do not tell
    (the solver's checks then report them, on the torch path)."""
    try:
        n = int(args["Q"].shape[-1])
        rows = n + sum(int(args[k].shape[-2]) for k in ("G", "A") if args[k] is not None)
        batch = torch.broadcast_shapes(*(tuple(a.shape[:a.ndim - CORE_RANK[k]])
                                         for k, a in args.items() if a is not None))
    except (AttributeError, IndexError, RuntimeError, TypeError, ValueError):
        return None
    return math.prod(batch) * rows * n


def route(args: dict, init: dict | None = None):
    """``Backend.route`` of the torch backend: NumPy views for small CPU problems."""
    given = [a for a in args.values() if a is not None]
    if NUMPY_MAX_ENTRIES <= 0 or not given or args.get("Q") is None:
        return None
    for a in given + [a for a in (init or {}).values() if a is not None]:
        if not (type(a) in _PLAIN and a.device.type == "cpu" and a.layout == torch.strided
                and a.dtype in (torch.float32, torch.float64) and not _wrapped(a)):
            return None
    size = _entries(args)
    if size is None or size > NUMPY_MAX_ENTRIES:
        return None
    def host(arrays):
        return {k: None if a is None else a.detach().resolve_neg().numpy()
                for k, a in arrays.items()}

    return load("numpy"), host(args), None if init is None else host(init), _back


def _tensor(a: np.ndarray):
    # The solution's arrays are the NumPy backend's own; a read-only one (a broadcast
    # view) or one with negative strides is copied (torch takes neither as it is).
    if not a.flags.writeable or any(s < 0 for s in a.strides):
        a = np.array(a)
    return torch.from_numpy(a)


def _to_torch(v):
    """Every NumPy array and dtype in ``v`` (nested tuples, NamedTuples, dicts) as torch's."""
    if isinstance(v, np.ndarray):
        return _tensor(v)
    if isinstance(v, np.dtype) or (isinstance(v, type) and issubclass(v, np.generic)):
        return _TORCH_DTYPE.get(np.dtype(v), v)
    if isinstance(v, tuple):
        items = [_to_torch(u) for u in v]
        return type(v)(*items) if hasattr(v, "_fields") else tuple(items)
    if isinstance(v, dict):
        return {k: _to_torch(u) for k, u in v.items()}
    return v


def _on_cpu(prob):
    return prob._replace(device=torch.device("cpu"))


def _solve_by_inverse(Linv, R, transpose):
    """``solve_triangular`` for the NumPy backend's factors, which hold ``L^{-1}``."""
    X = (Linv.mT if transpose else Linv) @ R.to(Linv.dtype)
    return X.to(R.dtype)


def _back(sol):
    """The NumPy backend's solution as tensors, its context that of the torch backend."""
    from . import torch as torch_backend

    ctx = sol.context
    out = _to_torch(sol._replace(context=None))
    if ctx is None:
        return out
    system = _to_torch(ctx.system)
    if system is not None and hasattr(system, "sub"):
        system = system._replace(sub=_on_cpu(system.sub))
    ops = torch_backend.ops._replace(solve_triangular=_solve_by_inverse)
    new = _to_torch(ctx._replace(xp=None, ops=None, asarray=None, system=None))
    new = new._replace(xp=torch_backend.namespace, ops=ops, asarray=torch_backend.asarray,
                       prob=_on_cpu(new.prob), system=system)
    return out._replace(context=new)
