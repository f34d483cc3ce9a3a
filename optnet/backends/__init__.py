"""Backends: one module per array library, each declaring the :class:`optnet._ops.Backend`
protocol (``namespace``, ``asarray``, ``quiet``, ``has_float64``, ``ops``, ``to_host``).

Only this package imports torch, jax or cupy, and only when that backend is
asked for (by name or by passing its arrays). The framework adapters (autodiff
rules, modules) are not backends: they live in ``optnet/adapters/``.
"""

from __future__ import annotations

import importlib

from .._ops import Backend

NAMES = ("numpy", "array_api_strict", "torch", "jax", "cupy")


def load(name: str) -> Backend:
    """The :class:`Backend` of ``optnet.backends.<name>`` (imported on first use).

    Built from the module's attributes at each call, so that a test may replace one
    (``ops``, say) for the duration of a solve.
    """
    if name not in NAMES:
        raise ValueError(f"backend must be one of {NAMES} or None; received {name!r}.")
    mod = importlib.import_module(f"{__name__}.{name}")
    optional = {"route"}
    return Backend(name=name, **{f: getattr(mod, f, None) if f in optional else getattr(mod, f)
                                 for f in Backend._fields if f != "name"})


def library_of(a) -> str | None:
    """Name of the backend an array belongs to, or None for non-arrays."""
    import array_api_compat as compat

    if compat.is_numpy_array(a):
        return "numpy"
    if compat.is_torch_array(a):
        return "torch"
    if compat.is_jax_array(a):
        return "jax"
    if compat.is_cupy_array(a):
        return "cupy"
    if type(a).__module__.startswith("array_api_strict"):
        return "array_api_strict"
    if compat.is_array_api_obj(a):
        raise ValueError(f"arrays of type {type(a).__module__}.{type(a).__name__} are not "
                         f"supported; use one of {NAMES}.")
    return None


def infer(arrays: dict) -> str:
    """The backend of the given arrays (NumPy if none is an array).

    Raises ``ValueError`` naming the arguments when they mix array libraries.
    """
    libs = {}
    for name, a in arrays.items():
        lib = library_of(a)
        if lib is not None:
            libs[name] = lib
    found = set(libs.values())
    if len(found) > 1:
        desc = ", ".join(f"{k}: {v}" for k, v in libs.items())
        raise ValueError(
            "the inputs mix array libraries (" + desc + "); pass arrays of one library, "
            "or name a backend to convert them all."
        )
    return found.pop() if found else "numpy"
