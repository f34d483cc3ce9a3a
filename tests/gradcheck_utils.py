"""Helpers for the derivative tests (``test_gradients.py``).

* ``make_qp``: random batched QPs whose optimum is known exactly and strictly
  complementary, with any subset of the inputs shared by the batch.
* ``fd_solutions`` / ``fd_tangents``: central finite differences of the solution
  along one direction per input, all of them in ONE batched solve (the
  perturbed copies are stacked along a new leading batch axis; lanes are
  independent, so this is the same as solving them one by one).
* ``directional_error``: the error measure used throughout,
  ``|fd - an| / max(|fd|, 1e-3 * scale)`` with ``scale`` the Cauchy-Schwarz bound
  ``|g| |D|`` on the directional derivative (``g`` the whole gradient), so that a
  derivative that is small only by cancellation is measured against the size it
  could have had, not against zero.
"""

from __future__ import annotations

import math

import numpy as np

import optnet

NAMES = ("Q", "q", "G", "h", "A", "b")
MATRICES = ("Q", "G", "A")
VECTORS = ("q", "h", "b")
CORE_RANK = {"Q": 2, "q": 1, "G": 2, "h": 1, "A": 2, "b": 1}
BACKENDS = ("numpy", "array_api_strict")
SOL_FIELDS = ("x", "z", "y", "s")


def to_numpy(a):
    """Any array (NumPy, array-api-strict, ...) or None -> NumPy array or None."""
    if a is None:
        return None
    try:
        return np.asarray(a)
    except Exception:  # pragma: no cover - libraries without __array__
        return np.from_dlpack(a)


def batch_shape_of(prob: dict) -> tuple:
    """The broadcast batch shape of a problem dict (name -> array or None)."""
    shapes = [a.shape[: a.ndim - CORE_RANK[k]] for k, a in prob.items() if a is not None]
    return tuple(np.broadcast_shapes(*shapes))


def sizes_of(prob: dict) -> tuple[int, int, int]:
    n = prob["Q"].shape[-1]
    p = 0 if prob.get("G") is None else prob["G"].shape[-2]
    m = 0 if prob.get("A") is None else prob["A"].shape[-2]
    return n, m, p


# ---------------------------------------------------------------------------
# Problem construction
# ---------------------------------------------------------------------------


def _spd(rng, n, batch=()):
    L = rng.normal(size=(*batch, n, n)) / math.sqrt(n)
    return L @ np.swapaxes(L, -1, -2) + np.eye(n)


def _perp(v):
    """Projector onto the orthogonal complement of v (k,), identity if v == 0."""
    k = v.shape[-1]
    nv = v @ v
    if nv == 0.0:
        return np.eye(k)
    return np.eye(k) - np.outer(v, v) / nv


def _active_mask(rng, p, cap, n_active=None):
    """Bool (p,) with ``n_active`` (default: random in 0..min(p, cap)) True entries."""
    k = min(p, cap)
    if n_active is None:
        n_active = int(rng.integers(0, k + 1)) if k else 0
    n_active = min(n_active, k)
    mask = np.zeros(p, dtype=bool)
    mask[rng.choice(p, size=n_active, replace=False)] = True
    return mask


def make_qp(rng, n, m, p, batch=(), shared=(), n_active=None, degenerate=0):
    """A batch of QPs with a known, strictly complementary optimum.

    Per lane: ``x0`` normal, ``y0`` normal, a random subset of the rows of
    ``G`` tight (``s0 = 0``, ``z0 ~ U(0.5, 2)``), the others slack
    (``s0 ~ U(0.5, 1)``, ``z0 = 0``); then ``h = G x0 + s0``, ``b = A x0`` and
    ``q = -(Q x0 + A'y0 + G'z0)`` make ``(x0, y0, z0, s0)`` satisfy the KKT
    conditions exactly. At most ``n - m`` rows are tight so that the active
    constraints are (generically) linearly independent and the duals unique.

    ``shared`` names inputs given without batch dimensions. If no vector
    (q, h, b) is shared, every lane gets its own optimum and the batched
    matrices are drawn per lane. If some vector is shared, all lanes share one
    optimum ``(x0, y0, z0, s0)`` and the vectors; a batched matrix is then the
    base matrix plus a per-lane perturbation that keeps the KKT conditions:
    ``Q + P_x S P_x`` (S PSD), ``G + P_z R P_x``, ``A + P_y T P_x``, where
    ``P_v`` projects onto the complement of ``v``.

    ``degenerate`` extra rows (requires one optimum per lane or shared) are
    tight with a zero multiplier (``s0 = z0 = 0``); they are the LAST rows.

    Returns
    -------
    prob : dict name -> np.ndarray (G/h, A/b absent when p/m == 0 -> None)
    opt : dict with x, y, z, s of shape (*batch, k) (the exact optimum)
    """
    shared = set(shared)
    B = math.prod(batch)
    common_point = bool(shared & set(VECTORS))
    n_lane_points = 1 if common_point else B
    cap = max(n - m - degenerate, 0)

    pts = []
    for _ in range(n_lane_points):
        x0 = rng.normal(size=n)
        y0 = rng.normal(size=m)
        act = _active_mask(rng, p, cap, n_active)
        z0 = np.where(act, rng.uniform(0.5, 2.0, size=p), 0.0)
        s0 = np.where(act, 0.0, rng.uniform(0.5, 1.0, size=p))
        if degenerate:
            z0 = np.concatenate([z0, np.zeros(degenerate)])
            s0 = np.concatenate([s0, np.zeros(degenerate)])
        pts.append((x0, y0, z0, s0))
    pp = p + degenerate

    lanes = []
    if common_point:
        x0, y0, z0, s0 = pts[0]
        Q0, G0, A0 = _spd(rng, n), rng.normal(size=(pp, n)), rng.normal(size=(m, n))
        Px, Pz, Py = _perp(x0), _perp(z0), _perp(y0)
        for _ in range(B):
            Q, G, A = Q0, G0, A0
            if "Q" not in shared:
                S = rng.normal(size=(n, n)) / math.sqrt(n)
                Q = Q0 + Px @ (S @ S.T) @ Px
            if "G" not in shared:
                G = G0 + 0.5 * Pz @ rng.normal(size=(pp, n)) @ Px
            if "A" not in shared:
                A = A0 + 0.5 * Py @ rng.normal(size=(m, n)) @ Px
            lanes.append((Q, G, A, x0, y0, z0, s0))
    else:
        Q0, G0, A0 = _spd(rng, n), rng.normal(size=(pp, n)), rng.normal(size=(m, n))
        for x0, y0, z0, s0 in pts:
            Q = Q0 if "Q" in shared else _spd(rng, n)
            G = G0 if "G" in shared else rng.normal(size=(pp, n))
            A = A0 if "A" in shared else rng.normal(size=(m, n))
            lanes.append((Q, G, A, x0, y0, z0, s0))

    per = {k: [] for k in NAMES}
    opt = {k: [] for k in SOL_FIELDS}
    for Q, G, A, x0, y0, z0, s0 in lanes:
        per["Q"].append(Q)
        per["G"].append(G)
        per["A"].append(A)
        per["q"].append(-(Q @ x0 + A.T @ y0 + G.T @ z0))
        per["h"].append(G @ x0 + s0)
        per["b"].append(A @ x0)
        for k, v in zip(SOL_FIELDS, (x0, z0, y0, s0), strict=True):
            opt[k].append(v)

    prob = {}
    for k in NAMES:
        arr = np.stack(per[k], axis=0)
        if k in shared:
            prob[k] = np.array(arr[0])
        else:
            prob[k] = np.array(arr.reshape((*batch, *arr.shape[1:])))
    if pp == 0:
        prob["G"] = prob["h"] = None
    if m == 0:
        prob["A"] = prob["b"] = None
    opt = {k: np.broadcast_to(np.stack(v, 0), (B, len(v[0]))).reshape((*batch, len(v[0])))
           for k, v in opt.items()}
    return prob, opt


def random_directions(rng, prob: dict, symmetric_Q=True) -> dict:
    """One random direction per given input (same shape), unit Frobenius norm."""
    dirs = {}
    for k, a in prob.items():
        if a is None:
            continue
        d = rng.normal(size=a.shape)
        if k == "Q" and symmetric_Q:
            d = 0.5 * (d + np.swapaxes(d, -1, -2))
        nd = np.linalg.norm(d)
        dirs[k] = d / nd if nd > 0 else d
    return dirs


def random_cotangents(rng, batch, n, m, p, which="xzy"):
    """Random (dx, dz, dy) of shapes (*batch, n|p|m); None for fields not in ``which``."""
    dx = rng.normal(size=(*batch, n)) if "x" in which else np.zeros((*batch, n))
    dz = rng.normal(size=(*batch, p)) if "z" in which else None
    dy = rng.normal(size=(*batch, m)) if "y" in which else None
    return dx, dz, dy


# ---------------------------------------------------------------------------
# Solving, derivatives, finite differences
# ---------------------------------------------------------------------------


def solve(prob: dict, backend="numpy", **kw):
    return optnet.solve(prob["Q"], prob["q"], prob.get("G"), prob.get("h"), prob.get("A"),
                        prob.get("b"), backend=backend, **kw)


def sol_numpy(sol) -> dict:
    return {k: to_numpy(getattr(sol, k)) for k in (*SOL_FIELDS, "status")}


def grads_numpy(g) -> dict:
    return {k: to_numpy(getattr(g, k)) for k in NAMES}


def tangents_numpy(t) -> dict:
    return {k: to_numpy(getattr(t, k)) for k in SOL_FIELDS}


def loss(sold: dict, dx, dz=None, dy=None) -> float:
    """<dx, x> + <dz, z> + <dy, y> for a numpy solution dict (any leading dims)."""
    val = float(np.sum(dx * sold["x"]))
    if dz is not None and sold["z"].shape[-1]:
        val += float(np.sum(dz * sold["z"]))
    if dy is not None and sold["y"].shape[-1]:
        val += float(np.sum(dy * sold["y"]))
    return val


def loss_terms(sold: dict, dx, dz=None, dy=None) -> float:
    """Sum of the absolute values of the terms of ``loss`` (its rounding scale)."""
    val = float(np.sum(np.abs(dx * sold["x"])))
    if dz is not None and sold["z"].shape[-1]:
        val += float(np.sum(np.abs(dz * sold["z"])))
    if dy is not None and sold["y"].shape[-1]:
        val += float(np.sum(np.abs(dy * sold["y"])))
    return val


def fd_solutions(prob: dict, dirs: dict, eps: float, backend="numpy", **kw) -> dict:
    """Solutions at ``X +- eps D`` for each ``X, D`` in ``dirs``, from one batched solve.

    Returns name -> (plus, minus), each a numpy solution dict with the batch
    shape of ``prob``. Asserts that every perturbed problem was SOLVED.
    """
    names = list(dirs)
    K = len(names)
    bs = batch_shape_of(prob)
    nb = len(bs)
    args = {}
    for k in NAMES:
        a = prob.get(k)
        if a is None:
            args[k] = None
            continue
        base = a.reshape((1,) * (nb - (a.ndim - CORE_RANK[k])) + a.shape)
        if k in dirs:
            d = np.reshape(dirs[k], base.shape)
            stack = np.repeat(base[None], 2 * K, axis=0)
            i = names.index(k)
            with np.errstate(invalid="ignore"):
                stack[2 * i] = base + eps * d
                stack[2 * i + 1] = base - eps * d
            # inf + 0 stays inf; keep +inf rows of h exactly +inf
            if k == "h":
                stack = np.where(np.isposinf(base)[None], np.inf, stack)
            args[k] = stack
        else:
            args[k] = base
    sol = sol_numpy(solve(args, backend=backend, **kw))
    assert np.all(sol["status"] == int(optnet.Status.SOLVED)), sol["status"]
    out = {}
    for i, k in enumerate(names):
        plus = {f: sol[f][2 * i] for f in SOL_FIELDS}
        minus = {f: sol[f][2 * i + 1] for f in SOL_FIELDS}
        out[k] = (plus, minus)
    return out


def fd_tangents(pm: dict, eps: float) -> dict:
    """name -> tangent dict (x, z, y, s) from ``fd_solutions`` output (s: inf rows -> 0)."""
    out = {}
    for k, (plus, minus) in pm.items():
        t = {}
        for f in SOL_FIELDS:
            a, b = plus[f], minus[f]
            both_inf = np.isinf(a) & np.isinf(b)
            diff = np.where(both_inf, 0.0, a - np.where(both_inf, 0.0, b))
            t[f] = diff / (2 * eps)
        out[k] = t
    return out


def directional_error(fd: float, an: float, scale: float) -> float:
    """``|fd - an| / max(|fd|, 1e-3 * scale)`` (see the module docstring)."""
    denom = max(abs(fd), 1e-3 * scale, np.finfo(np.float64).tiny)
    return abs(fd - an) / denom


def grad_norm(g: dict) -> float:
    return math.sqrt(sum(float(np.sum(v * v)) for v in g.values() if v is not None))


def vector_error(fd: np.ndarray, an: np.ndarray, scale: float) -> float:
    """Norm version of ``directional_error`` for tangents."""
    denom = max(float(np.linalg.norm(fd)), 1e-3 * scale, np.finfo(np.float64).tiny)
    return float(np.linalg.norm(fd - an)) / denom


def dot_error(lhs: float, rhs: float, terms_scale: float) -> float:
    """Relative difference of two evaluations of the same inner product.

    ``terms_scale`` is the sum of the absolute values of the products summed
    (the natural rounding scale of an inner product).
    """
    denom = max(abs(lhs), abs(rhs), terms_scale * 1e-3, np.finfo(np.float64).tiny)
    return abs(lhs - rhs) / denom


def sum_to_shape(g_full: np.ndarray, shape: tuple, rank: int) -> np.ndarray:
    """Sum a per-lane array (*batch, *core) to ``shape`` (the broadcasting adjoint)."""
    nb_full = g_full.ndim - rank
    nb_in = len(shape) - rank
    lead = nb_full - nb_in
    g = g_full.sum(axis=tuple(range(lead))) if lead else g_full
    axes = tuple(i for i in range(nb_in) if shape[i] == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def expand(prob: dict) -> dict:
    """Broadcast every input to the full batch shape (copies)."""
    bs = batch_shape_of(prob)
    out = {}
    for k, a in prob.items():
        if a is None:
            out[k] = None
            continue
        core = a.shape[a.ndim - CORE_RANK[k]:]
        out[k] = np.array(np.broadcast_to(a, (*bs, *core)))
    return out


def lane(prob: dict, idx: tuple) -> dict:
    """The problem of one lane (index into the full batch shape), unbatched."""
    full = expand(prob)
    return {k: (None if a is None else np.array(a[idx])) for k, a in full.items()}
