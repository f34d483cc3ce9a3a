"""Input checks and the canonical (flattened, sanitized) form of a batch of QPs.

``canonicalize`` turns the user's ``Q, q, G, h, A, b`` into a :class:`Problem`
whose every array has a leading "lane" dimension that is either 1 (shared by
the batch) or ``B`` (the product of the broadcast batch shape). Shapes are
checked here, with ``ValueError`` naming the argument; values are not: a lane
whose data hold NaN/Inf is replaced by a harmless problem and flagged in
``Problem.bad`` so that it can be reported as ``NUMERICAL_ERROR`` without
touching its neighbours.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from array_api_compat import device

ARG_NAMES = ("Q", "q", "G", "h", "A", "b")
# Trailing (non-batch) rank of each argument.
CORE_RANK = {"Q": 2, "q": 1, "G": 2, "h": 1, "A": 2, "b": 1}


class Problem(NamedTuple):
    """A batch of QPs in canonical form (``B`` lanes; lead dim 1 or ``B``).

    Attributes
    ----------
    Q : (1|B, n, n)      q : (1|B, n)
    G : (1|B, p, n)      h : (1|B, p)     ``None`` when there are no inequalities
    A : (1|B, m, n)      b : (1|B, m)     ``None`` when there are no equalities
    bad : (B,) bool      lanes whose data held NaN/Inf (data replaced)
    h_free : (1|B, p) bool or None   rows where the user gave ``h = +inf``
    batch_shape : tuple  the broadcast batch shape (``B = prod(batch_shape)``)
    n, m, p : int        sizes (``m``/``p`` are 0 for absent blocks)
    in_shapes : dict     the user's shape for each given argument
    dtype : dtype        the floating dtype of the iteration (float64 where the
                         backend has it: float32 problems are iterated in float64)
    factor_dtype : dtype the dtype of the Cholesky factorizations (the input dtype)
    device : object      the device of the arrays
    out_dtype : dtype    the dtype of the results (the input dtype)
    diagonal_h : bool    ``H = Q + G'W^{-1}G`` is diagonal for every ``W``: ``Q`` diagonal
                         and every row of ``G`` with at most one nonzero (bounds on the
                         variables); set by the interior point's driver on eager backends
                         (``_pdipm.iteration_problem``), used by ``_kkt``
    bound_rows : bool    every row of ``G`` has at most one nonzero, in every lane (bounds
                         on the variables); the polish then eliminates the variables its
                         active rows fix (``_polish``)
    definite_diagonal : bool  ``Q`` is diagonal with positive entries, in every lane
    examined : bool      the three flags above (and ``factor_dtype``) have been decided
                         (:func:`_pdipm.iteration_problem`: False where not yet, and on
                         traced backends, where all three stay False)
    """

    Q: Any
    q: Any
    G: Any
    h: Any
    A: Any
    b: Any
    bad: Any
    h_free: Any
    batch_shape: tuple
    n: int
    m: int
    p: int
    in_shapes: dict
    dtype: Any
    factor_dtype: Any
    device: Any
    out_dtype: Any
    diagonal_h: bool = False
    bound_rows: bool = False
    definite_diagonal: bool = False
    examined: bool = False


def _shape(a) -> tuple:
    return tuple(int(d) for d in a.shape)


def check_dtypes(xp, arrays: dict) -> Any:
    """Return the floating dtype of the computation, or raise ``ValueError``.

    float32 and float64 are accepted; integer arrays are promoted (to the float
    dtype of the other inputs, float64 if all are integer); anything else
    (bool, complex, float16, ...) is rejected.
    """
    floats = []
    for name, a in arrays.items():
        dt = a.dtype
        try:
            integral = xp.isdtype(dt, "integral")
        except (TypeError, ValueError):   # a dtype the namespace does not know (bfloat16)
            integral = False
        if integral:
            continue
        if dt == xp.float32 or dt == xp.float64:
            floats.append(dt)
            continue
        raise ValueError(
            f"{name} must have dtype float32 or float64 (integers are promoted); "
            f"received dtype {dt}."
        )
    if not floats:
        return xp.float64
    return xp.float64 if any(dt == xp.float64 for dt in floats) else xp.float32


def _check_ranks(arrays: dict) -> None:
    for name, a in arrays.items():
        if a.ndim < CORE_RANK[name]:
            want = "(..., n, n)" if name == "Q" else (
                "(..., rows, n)" if CORE_RANK[name] == 2 else "(..., size)")
            raise ValueError(
                f"{name} must have at least {CORE_RANK[name]} dimension(s), shape "
                f"{want}; received shape {_shape(a)}."
            )


def _check_sizes(arrays: dict) -> tuple[int, int, int]:
    Q = arrays["Q"]
    n = _shape(Q)[-1]
    if _shape(Q)[-2] != n:
        raise ValueError(f"Q must be square, shape (..., n, n); received shape {_shape(Q)}.")
    if n == 0:
        raise ValueError("Q must have n >= 1 variables; received shape "
                         f"{_shape(Q)}.")
    if _shape(arrays["q"])[-1] != n:
        raise ValueError(f"q must have shape (..., {n}) to match Q {_shape(Q)}; "
                         f"received shape {_shape(arrays['q'])}.")
    sizes = {}
    for M, v, rows in (("G", "h", "p"), ("A", "b", "m")):
        if M not in arrays:
            sizes[rows] = 0
            continue
        sM, sv = _shape(arrays[M]), _shape(arrays[v])
        if sM[-1] != n:
            raise ValueError(f"{M} must have shape (..., {rows}, {n}) to match Q "
                             f"{_shape(Q)}; received shape {sM}.")
        if sv[-1] != sM[-2]:
            raise ValueError(f"{v} must have shape (..., {sM[-2]}) to match {M} {sM}; "
                             f"received shape {sv}.")
        sizes[rows] = sM[-2]
    return n, sizes["m"], sizes["p"]


def _broadcast_batch(arrays: dict) -> tuple:
    batch_shapes = {k: _shape(a)[: a.ndim - CORE_RANK[k]] for k, a in arrays.items()}
    ndim = max(len(s) for s in batch_shapes.values())
    out = [1] * ndim
    for _name, bs in batch_shapes.items():
        padded = (1,) * (ndim - len(bs)) + bs
        for i, d in enumerate(padded):
            if d == 1:
                continue
            if out[i] not in (1, d):
                desc = ", ".join(f"{k}: {v}" for k, v in batch_shapes.items())
                raise ValueError(
                    "the batch dimensions (all but the trailing matrix/vector "
                    f"dimensions) must broadcast together; received {desc}."
                )
            out[i] = d
    return tuple(out)


def _to_lanes(xp, a, rank: int, batch_shape: tuple, B: int):
    """Reshape ``a`` (*batch_a, *core) to (1, *core) if shared, else (B, *core)."""
    core = _shape(a)[a.ndim - rank:]
    bs = _shape(a)[: a.ndim - rank]
    if math.prod(bs) == 1 and B != 1:
        return xp.reshape(a, (1, *core))
    a = xp.broadcast_to(a, (*batch_shape, *core))
    return xp.reshape(a, (B, *core))


def _device_or_none(a):
    try:
        return device(a)
    except Exception:  # a tracer without a committed device
        return None


def _lane_bad(xp, a, rank: int):
    """(lead,) bool: where ``a`` (lead, *core) holds a non-finite value."""
    finite = xp.isfinite(a)
    axes = tuple(range(1, 1 + rank))
    return ~xp.all(finite, axis=axes)


def canonicalize(xp, Q, q, G, h, A, b, *, has_float64: bool = True) -> Problem:
    """Check shapes and dtypes and bring the data to canonical form.

    float32 problems are iterated (residuals, steps, stopping tests) in float64
    when ``has_float64``, their KKT systems factored and solved in float32 while
    that is accurate enough (see ``_pdipm``): the answer keeps double-precision
    accuracy.

    Parameters
    ----------
    xp : array namespace; every argument must already belong to it.
    Q : (*bQ, n, n)   q : (*bq, n)   G : (*bG, p, n) or None   h : (*bh, p) or None
    A : (*bA, m, n) or None   b : (*bb, m) or None

    Returns
    -------
    Problem
    """
    given = {"Q": Q, "q": q, "G": G, "h": h, "A": A, "b": b}
    for M, v in (("G", "h"), ("A", "b")):
        if (given[M] is None) != (given[v] is None):
            have, miss = (M, v) if given[v] is None else (v, M)
            raise ValueError(f"{have} was given without {miss}: pass both or neither.")
    for name in ("Q", "q"):
        if given[name] is None:
            raise ValueError(f"{name} is required.")
    arrays = {k: a for k, a in given.items() if a is not None}
    _check_ranks(arrays)
    out_dtype = check_dtypes(xp, arrays)
    dtype = xp.float64 if has_float64 else out_dtype
    n, m, p = _check_sizes(arrays)
    in_shapes = {k: _shape(a) for k, a in arrays.items()}
    batch_shape = _broadcast_batch(arrays)
    B = math.prod(batch_shape)
    # Blocks with zero rows are the same as absent blocks.
    if p == 0:
        arrays.pop("G", None), arrays.pop("h", None)
    if m == 0:
        arrays.pop("A", None), arrays.pop("b", None)

    devices = {k: _device_or_none(a) for k, a in arrays.items()}
    known = {d for d in devices.values() if d is not None}   # traced arrays have none
    if len(known) > 1:
        desc = ", ".join(f"{k}: {d}" for k, d in devices.items())
        raise ValueError(f"the inputs are on different devices ({desc}); move them to one.")
    # Arrays are created on the inputs' device, or left to the library's default
    # placement when some input is traced.
    dev = known.pop() if known and None not in devices.values() else None
    lanes = {k: _to_lanes(xp, xp.astype(a, dtype, copy=False), CORE_RANK[k], batch_shape, B)
             for k, a in arrays.items()}
    bad = xp.zeros((B,), dtype=xp.bool, device=dev)
    h_free = None
    if "h" in lanes:
        h_ = lanes["h"]
        h_free = xp.isinf(h_) & (h_ > 0)
        # A free row becomes 0'x <= 1: always satisfied, harmless to the KKT system.
        lanes["h"] = xp.where(h_free, 1.0, h_)
    # Only the symmetric part of Q matters to the objective; using it everywhere
    # makes the solution (and its derivative) a function of that part alone.
    lanes["Q"] = 0.5 * (lanes["Q"] + xp.matrix_transpose(lanes["Q"]))
    for k, a in lanes.items():
        bad = bad | _lane_bad(xp, a, CORE_RANK[k])
    if h_free is not None:
        # (After the check: NaN/Inf in G is bad data even on a row with h = +inf.)
        lanes["G"] = xp.where(h_free[:, :, None], 0.0, lanes["G"])
    # Replace the data of bad lanes by a harmless problem (Q = I, everything else 0,
    # h = 1) so that their arithmetic stays finite; their outputs are NaN'd later.
    # A shared (lead dim 1) array is replaced only where it is itself non-finite
    # (every lane is bad then): a bad lane must not change its neighbours' data.
    for k, a in lanes.items():
        rank = CORE_RANK[k]
        lane_mask = bad if a.shape[0] == B else _lane_bad(xp, a, rank)
        mask = xp.reshape(lane_mask, (a.shape[0],) + (1,) * rank)
        if k == "Q":
            repl = xp.eye(n, dtype=dtype, device=dev)
        elif k == "h":
            repl = xp.ones(a.shape[1:], dtype=dtype, device=dev)
        else:
            repl = xp.zeros(a.shape[1:], dtype=dtype, device=dev)
        lanes[k] = xp.where(mask, repl, a)
    return Problem(
        Q=lanes["Q"], q=lanes["q"], G=lanes.get("G"), h=lanes.get("h"),
        A=lanes.get("A"), b=lanes.get("b"), bad=bad, h_free=h_free,
        batch_shape=batch_shape, n=n, m=m, p=p, in_shapes=in_shapes, dtype=dtype,
        factor_dtype=out_dtype, device=dev, out_dtype=out_dtype,
    )
