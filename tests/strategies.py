"""Problem generators of the test suite: hypothesis strategies and seeded builders.

Every generated feasible problem is feasible *by construction*: a point ``x0``
and slacks ``s0 > 0`` are drawn first and ``h = G x0 + s0``, ``b = A x0``.
Problems whose ``Q`` is singular (LPs, rank-deficient ``Q``) always get box
constraints around ``x0``, so that they are bounded.

Hypothesis draws only the *structure* of a problem (sizes, kind, which
arguments are batched, dtype, ...) and an integer seed, collected in a
:class:`QPSpec`; :meth:`QPSpec.build` makes the arrays with NumPy's generator.
A failing example is therefore reported as a short, reproducible ``QPSpec``.

Batch shapes: every argument's batch shape is taken from the chain
``() <= (bs[-1],) <= bs`` of the drawn broadcast batch shape ``bs``, so that any
two of them broadcast and one is a suffix of the other (this covers shared,
batched and partially broadcast arguments, e.g. ``(2, 3)`` against ``(3,)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

ARGS = ("Q", "q", "G", "h", "A", "b")
CORE_RANK = {"Q": 2, "q": 1, "G": 2, "h": 1, "A": 2, "b": 1}
KINDS = ("pd", "psd", "lp")
BATCH_SHAPES = ((), (1,), (3,), (2, 3), (4,))


# ---------------------------------------------------------------- helpers


def batch_shape_of(data: dict) -> tuple:
    """The broadcast batch shape of a problem.

    Parameters
    ----------
    data : dict
        Maps ``"Q"``, ..., ``"b"`` to NumPy arrays or ``None``.

    Returns
    -------
    tuple of int
    """
    shapes = [a.shape[: a.ndim - CORE_RANK[k]] for k, a in data.items() if a is not None]
    return tuple(np.broadcast_shapes(*shapes))


def lanes(data: dict):
    """Iterate over the single problems of a batch.

    Parameters
    ----------
    data : dict
        Maps ``"Q"``, ..., ``"b"`` to NumPy arrays or ``None``.

    Yields
    ------
    index : tuple of int
        The index of the lane in the broadcast batch shape.
    lane : dict
        The data of that lane (no batch dimensions; ``None`` kept).
    """
    bs = batch_shape_of(data)
    full = {k: None if a is None else np.broadcast_to(a, bs + a.shape[a.ndim - CORE_RANK[k]:])
            for k, a in data.items()}
    for idx in np.ndindex(*bs):
        yield idx, {k: None if a is None else a[idx] for k, a in full.items()}


def _reduce_to(t: np.ndarray, shape: tuple, core: int) -> np.ndarray:
    """Max-reduce the leading batch axes of ``t`` so that its batch shape becomes ``shape``.

    ``shape`` must be a suffix of ``t``'s batch shape or contain it as a suffix
    (then ``t`` is returned unchanged and broadcasts later).
    """
    bt = t.shape[: t.ndim - core]
    if len(shape) >= len(bt):
        assert shape[len(shape) - len(bt):] == bt or not bt
        return t
    assert bt[len(bt) - len(shape):] == shape
    return np.max(t, axis=tuple(range(len(bt) - len(shape))))


def _le(a: tuple, b: tuple) -> bool:
    """Whether batch shape ``a`` broadcasts to ``b`` (a suffix of it, in the chain)."""
    return len(a) <= len(b) and b[len(b) - len(a):] == a


def _mv(M, v):
    return np.einsum("...ij,...j->...i", M, v)


# ---------------------------------------------------------------- feasible QPs


@dataclass(frozen=True)
class QPSpec:
    """The structure of a random feasible batch of QPs (:meth:`build` makes the arrays).

    Attributes
    ----------
    n : int
        Number of variables.
    kind : {"pd", "psd", "lp"}
        ``Q = M M' + eps I`` (positive definite), ``Q = M M'`` with ``M`` of
        ``rank`` columns (semidefinite), or ``Q = 0``.
    p_rand : int
        Number of random inequality rows.
    box : bool
        Add the ``2 n`` rows of a box around ``x0`` (forced for "psd" and "lp").
    m : int
        Number of equality rows (``m < n``).
    shapes : tuple of (str, tuple) pairs
        The batch shape of each argument.
    dtype : str
        "float64" or "float32".
    seed : int
    rank : int
        Columns of ``M`` for "psd".
    eps : float
        The ``eps I`` of "pd".
    q_scale : float
        Standard deviation of ``q``.
    inf_rows : bool
        Set a random subset of the random (non-box) rows of ``h`` to ``+inf``.
    """

    n: int
    kind: str = "pd"
    p_rand: int = 0
    box: bool = False
    m: int = 0
    shapes: tuple = field(default_factory=tuple)
    dtype: str = "float64"
    seed: int = 0
    rank: int = 0
    eps: float = 0.1
    q_scale: float = 1.0
    inf_rows: bool = False

    @property
    def p(self) -> int:
        """Total number of inequality rows."""
        return self.p_rand + (2 * self.n if self.has_box else 0)

    @property
    def has_box(self) -> bool:
        """Whether the box rows are present."""
        return self.box or self.kind != "pd"

    def build(self) -> dict:
        """Make the arrays.

        Returns
        -------
        dict
            Maps ``"Q"``, ..., ``"b"`` to NumPy arrays of ``dtype`` (``None``
            for absent blocks).
        """
        return make_feasible_qp(self)


def make_feasible_qp(spec: QPSpec) -> dict:
    """Build a batch of QPs, feasible (and bounded) by construction, from a :class:`QPSpec`.

    Parameters
    ----------
    spec : QPSpec

    Returns
    -------
    dict
        Maps ``"Q"``, ..., ``"b"`` to NumPy arrays (``None`` for absent blocks).
    """
    rng = np.random.default_rng(spec.seed)
    n, m, p = spec.n, spec.m, spec.p
    shapes = {k: () for k in ARGS}
    shapes.update(dict(spec.shapes))
    full = ()
    for s in shapes.values():
        full = s if len(s) > len(full) else full

    # Q
    sQ = shapes["Q"]
    if spec.kind == "pd":
        M = rng.standard_normal(sQ + (n, n)) / math.sqrt(n)
        Q = M @ np.swapaxes(M, -1, -2) + spec.eps * np.eye(n)
    elif spec.kind == "psd" and spec.rank > 0:
        M = rng.standard_normal(sQ + (n, spec.rank)) / math.sqrt(spec.rank)
        Q = M @ np.swapaxes(M, -1, -2)
    else:
        Q = np.zeros(sQ + (n, n))
    q = spec.q_scale * rng.standard_normal(shapes["q"] + (n,))

    # A, b and the feasible point x0
    A = b = None
    if m:
        sA, sb = shapes["A"], shapes["b"]
        x0 = rng.standard_normal(sb + (n,))
        A = rng.standard_normal(sA + (m, n))
        if _le(sA, sb):
            b = _mv(A, x0)
        else:
            # b shared by lanes whose A differ: move each A so that A x0 = b.
            b = rng.standard_normal(sb + (m,))
            A = A + (b - _mv(A, x0))[..., None] * x0[..., None, :] / np.sum(x0 * x0, -1)[
                ..., None, None]
    else:
        x0 = rng.standard_normal(full + (n,))

    # G, h
    G = h = None
    if p:
        sG, sh = shapes["G"], shapes["h"]
        G = rng.standard_normal(sG + (spec.p_rand, n))
        if spec.has_box:
            box = np.concatenate([np.eye(n), -np.eye(n)])
            G = np.concatenate([G, np.broadcast_to(box, sG + box.shape)], axis=-2)
        t = _reduce_to(_mv(G, x0), sh, 1)
        s0 = rng.uniform(0.1, 1.0, sh + (p,))
        h = t + s0
        if spec.inf_rows and spec.p_rand:
            free = rng.uniform(size=h.shape) < 0.4
            free[..., spec.p_rand:] = False          # never the box rows
            h = np.where(free, np.inf, h)
    dt = np.dtype(spec.dtype)
    data = {"Q": Q, "q": q, "G": G, "h": h, "A": A, "b": b}
    return {k: None if a is None else np.ascontiguousarray(a, dtype=dt) for k, a in data.items()}


@st.composite
def qp_specs(draw, *, kinds=KINDS, dtypes=("float64",), min_n=1, max_n=12, batch_shapes=None,
             ineq=None, eq=None, inf_rows=False):
    """Hypothesis strategy of :class:`QPSpec` (feasible, bounded problems).

    Parameters
    ----------
    kinds : sequence of {"pd", "psd", "lp"}
    dtypes : sequence of {"float64", "float32"}
    min_n, max_n : int
        Range of the number of variables.
    batch_shapes : sequence of tuple, optional
        Broadcast batch shapes to draw from (default :data:`BATCH_SHAPES`);
        ``[()]`` gives single problems.
    ineq : bool or None
        True: at least one inequality row; False: none ("pd" only); None: either.
    eq : bool or None
        True: at least one equality row (needs ``n >= 2``); False: none; None: either.
    inf_rows : bool
        Put ``+inf`` in some random rows of ``h`` (forces ``ineq``).

    Returns
    -------
    hypothesis.strategies.SearchStrategy of QPSpec
    """
    if eq:
        min_n = max(min_n, 2)
    n = draw(st.integers(min_n, max_n), label="n")
    kind = draw(st.sampled_from(kinds), label="kind")
    rank = draw(st.integers(0, n - 1), label="rank") if kind == "psd" else 0
    eps = draw(st.sampled_from([1e-2, 1e-1, 1.0]), label="eps") if kind == "pd" else 0.0
    if kind != "pd" and ineq is False:
        raise ValueError("problems with singular Q need inequalities (the box)")
    if ineq is False:
        p_rand, box = 0, False
    else:
        lo = 1 if (ineq or inf_rows) else 0
        p_rand = draw(st.integers(lo, 2 * n), label="p_rand")
        box = kind != "pd" or draw(st.booleans(), label="box")
    m_max = n - 1
    if eq is False or m_max < 1:
        m = 0
    else:
        m = draw(st.integers(1 if eq else 0, m_max), label="m")
    bs = draw(st.sampled_from(BATCH_SHAPES if batch_shapes is None else batch_shapes),
              label="batch_shape")
    chain = sorted({(), bs[-1:], bs}, key=len)
    shapes = tuple((k, draw(st.sampled_from(chain), label=f"shape_{k}")) for k in ARGS)
    # Make sure the broadcast batch shape really is bs.
    if bs and not any(s == bs for _, s in shapes):
        k = draw(st.sampled_from(ARGS), label="batched_arg")
        shapes = tuple((a, bs if a == k else s) for a, s in shapes)
    dtype = draw(st.sampled_from(dtypes), label="dtype")
    q_scale = draw(st.sampled_from([0.1, 1.0, 10.0]), label="q_scale")
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    return QPSpec(n=n, kind=kind, p_rand=p_rand, box=box, m=m, shapes=shapes, dtype=dtype,
                  seed=seed, rank=rank, eps=eps, q_scale=q_scale, inf_rows=inf_rows)


# ---------------------------------------------------------------- bad problems


def feasible_lane(rng, n: int, p: int, m: int) -> dict:
    """One random strictly convex, feasible QP (no batch dimensions).

    Parameters
    ----------
    rng : numpy.random.Generator
    n, p, m : int
        Numbers of variables, inequality rows and equality rows (``m < n``).

    Returns
    -------
    dict
        Maps ``"Q"``, ..., ``"b"`` to float64 arrays (``None`` where ``p`` or ``m`` is 0).
    """
    M = rng.standard_normal((n, n)) / math.sqrt(n)
    Q = M @ M.T + 0.1 * np.eye(n)
    q = rng.standard_normal(n)
    x0 = rng.standard_normal(n)
    G = rng.standard_normal((p, n)) if p else None
    h = G @ x0 + rng.uniform(0.1, 1.0, p) if p else None
    A = rng.standard_normal((m, n)) if m else None
    b = A @ x0 if m else None
    return {"Q": Q, "q": q, "G": G, "h": h, "A": A, "b": b}


INFEASIBLE_KINDS = ("ineq", "eq", "eq_ineq")


def primal_infeasible_lane(rng, n: int, p: int, m: int, how: str = "ineq") -> dict:
    """One primal infeasible QP with the given sizes.

    Parameters
    ----------
    rng : numpy.random.Generator
    n, p, m : int
        Sizes (``how`` needs ``p >= 2`` for "ineq", ``m >= 2`` for "eq",
        ``m >= 1`` and ``p >= 1`` for "eq_ineq").
    how : {"ineq", "eq", "eq_ineq"}
        "ineq": ``x_1 <= -1`` and ``-x_1 <= -1``. "eq": two equal rows of
        ``A`` with different right-hand sides. "eq_ineq": ``x_1 = 2`` and
        ``x_1 <= 1``.

    Returns
    -------
    dict
    """
    d = feasible_lane(rng, n, p, m)
    e1 = np.eye(n)[0]
    if how == "ineq":
        assert p >= 2
        d["G"][0], d["h"][0] = e1, -1.0
        d["G"][1], d["h"][1] = -e1, -1.0
    elif how == "eq":
        assert m >= 2
        d["A"][1] = d["A"][0]
        d["b"][1] = d["b"][0] + 1.0
    elif how == "eq_ineq":
        assert m >= 1 and p >= 1
        d["A"][0], d["b"][0] = e1, 2.0
        d["G"][0], d["h"][0] = e1, 1.0
    else:
        raise ValueError(how)
    return d


def unbounded_lane(rng, n: int, p: int, m: int, lp: bool = True) -> dict:
    """One feasible but unbounded QP (a recession direction ``d`` with ``q'd < 0``).

    ``Qd = 0`` (``Q = 0`` for ``lp``, else ``Q = P M M' P`` with ``P`` the
    projector orthogonal to ``d``), ``Ad = 0``, ``Gd <= 0``, ``q'd = -1``; the
    constraints are satisfied by ``x0``, so the objective decreases without
    bound along ``x0 + t d``.

    Parameters
    ----------
    rng : numpy.random.Generator
    n, p, m : int
        Sizes (``m < n``).
    lp : bool
        ``Q = 0`` if True, else a nonzero semidefinite ``Q`` (needs ``n >= 2``).

    Returns
    -------
    dict
    """
    d = rng.standard_normal(n)
    d /= np.linalg.norm(d)
    P = np.eye(n) - np.outer(d, d)
    if lp:
        Q = np.zeros((n, n))
    else:
        M = P @ rng.standard_normal((n, n)) / math.sqrt(n)
        Q = M @ M.T
    q = rng.standard_normal(n)
    q = q - (q @ d + 1.0) * d
    x0 = rng.standard_normal(n)
    G = h = A = b = None
    if p:
        G = rng.standard_normal((p, n))
        G = G - np.outer(G @ d + rng.uniform(0.0, 1.0, p), d)     # G d <= 0
        h = G @ x0 + rng.uniform(0.1, 1.0, p)
    if m:
        A = rng.standard_normal((m, n)) @ P                      # A d = 0
        b = A @ x0
    return {"Q": Q, "q": q, "G": G, "h": h, "A": A, "b": b}


def stack_lanes(lane_list: list) -> dict:
    """Stack single problems (same sizes, same absent blocks) along a new batch axis.

    Parameters
    ----------
    lane_list : list of dict

    Returns
    -------
    dict
        Maps each argument to an array (B, ...) or ``None``.
    """
    return {k: None if lane_list[0][k] is None else np.stack([d[k] for d in lane_list])
            for k in ARGS}


# ---------------------------------------------------------------- degenerate problems

DEGENERATE_KINDS = (
    "redundant_equalities",
    "fixed_variable",
    "weakly_active",
    "degenerate_lp_vertex",
    "equality_as_two_inequalities",
    "inequality_duplicating_equality",
)


def degenerate_lane(rng, kind: str, n: int, p: int) -> dict:
    """One feasible, bounded QP that violates a usual nondegeneracy assumption.

    Parameters
    ----------
    rng : numpy.random.Generator
    kind : str
        One of :data:`DEGENERATE_KINDS`:

        * "redundant_equalities": ``A`` has a row repeated (times 2), ``b``
          consistent (rank-deficient ``A``).
        * "fixed_variable": box constraints with ``lo_1 == hi_1`` (and one
          equality).
        * "weakly_active": the unconstrained minimizer lies on ``min(p, n)``
          constraint boundaries (active constraints with zero multipliers).
        * "degenerate_lp_vertex": LP over a box whose optimal vertex also lies
          on an extra constraint (n + 1 active rows in n dimensions).
        * "equality_as_two_inequalities": ``a'x <= c`` and ``-a'x <= -c``
          (no strictly feasible point), plus ``p`` random rows.
        * "inequality_duplicating_equality": ``A x = b`` and the same row as an
          inequality ``a_1'x <= b_1`` (no strictly feasible point), plus ``p``
          random rows.
    n : int
        Number of variables (>= 2).
    p : int
        Number of random inequality rows, where the kind has any.

    Returns
    -------
    dict
        float64 arrays (``None`` for absent blocks).
    """
    d = feasible_lane(rng, n, p, 1)
    if kind == "redundant_equalities":
        d["A"] = np.vstack([d["A"], 2.0 * d["A"]])
        d["b"] = np.concatenate([d["b"], 2.0 * d["b"]])
    elif kind == "fixed_variable":
        x0 = np.linalg.lstsq(d["A"], d["b"], rcond=None)[0]
        lo, hi = x0 - 1.0, x0 + 1.0
        lo[0] = hi[0] = x0[0]
        d["G"] = np.vstack([np.eye(n), -np.eye(n)])
        d["h"] = np.concatenate([hi, -lo])
    elif kind == "weakly_active":
        xstar = -np.linalg.solve(d["Q"], d["q"])
        k = min(max(p, 1), n)
        G = rng.standard_normal((k + p, n))
        h = G @ xstar + np.concatenate([np.zeros(k), rng.uniform(0.1, 1.0, p)])
        d.update(G=G, h=h, A=None, b=None)
    elif kind == "degenerate_lp_vertex":
        c = rng.uniform(0.5, 1.5, n)                  # optimum at the vertex x = -1
        G = np.vstack([np.eye(n), -np.eye(n), -np.ones((1, n))])
        h = np.concatenate([np.ones(n), np.ones(n), [float(n)]])
        d = {"Q": np.zeros((n, n)), "q": c, "G": G, "h": h, "A": None, "b": None}
    elif kind == "equality_as_two_inequalities":
        a, c = d["A"][0], d["b"][0]
        rows = [a[None], -a[None]] + ([d["G"]] if p else [])
        d["G"] = np.vstack(rows)
        d["h"] = np.concatenate([[c, -c]] + ([d["h"]] if p else []))
        d["A"] = d["b"] = None
    elif kind == "inequality_duplicating_equality":
        d["G"] = np.vstack([d["A"]] + ([d["G"]] if p else []))
        d["h"] = np.concatenate([d["b"]] + ([d["h"]] if p else []))
    else:
        raise ValueError(kind)
    return d


# ---------------------------------------------------------------- the paper's benchmark


def paper_problem(rng, batch: int, n: int = 100, p: int = 100) -> dict:
    """The random benchmark problems of the OptNet paper (Amos & Kolter 2017, footnote 4).

    ``Q = U'U + 1e-3 I`` with ``U`` uniform on [0, 1], ``G`` standard normal,
    ``h = G z0 + s0`` with ``z0`` standard normal and ``s0`` uniform on [0, 1],
    ``q`` standard normal; no equality constraints.

    Parameters
    ----------
    rng : numpy.random.Generator
    batch : int
    n, p : int

    Returns
    -------
    dict
        float64 arrays with batch dimension ``batch``; ``A`` and ``b`` are ``None``.
    """
    U = rng.uniform(0.0, 1.0, (batch, n, n))
    Q = np.swapaxes(U, -1, -2) @ U + 1e-3 * np.eye(n)
    q = rng.standard_normal((batch, n))
    G = rng.standard_normal((batch, p, n))
    z0 = rng.standard_normal((batch, n))
    s0 = rng.uniform(0.0, 1.0, (batch, p))
    h = _mv(G, z0) + s0
    return {"Q": Q, "q": q, "G": G, "h": h, "A": None, "b": None}


def cast(data: dict, dtype) -> dict:
    """Cast every array of a problem to ``dtype`` (``None`` kept).

    Parameters
    ----------
    data : dict
    dtype : numpy dtype or str

    Returns
    -------
    dict
    """
    return {k: None if a is None else np.asarray(a, dtype=dtype) for k, a in data.items()}
