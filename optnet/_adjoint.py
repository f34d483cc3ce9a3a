"""Derivatives of the QP solution: reverse mode (``vjp``) and forward mode (``jvp``).

Derivation (the OptNet paper's eqs. 6-8, in the symmetric form of ``_kkt``)
---------------------------------------------------------------------------
At the optimum ``(x, y, z, s)``::

    Qx + q + A'y + G'z = 0,    Ax = b,    Gx + s = h,    z o s = 0.

Differentiate, with ``s = h - Gx``, and divide the complementarity row
``z o (G dx + dG x - dh) - s o dz = 0`` by ``z``::

    Q dx + A'dy + G'dz = -(dQ x + dq + dA'y + dG'z)
    A dx               = db - dA x                          i.e.  K [dx; dy; dz] = r(d)
    G dx - W dz        = dh - dG x,        W = diag(s / z)

(the KKT matrix of the interior-point iteration at ``W = s / z``). ``jvp`` solves
it for the tangents ``(dx, dy, dz)`` (and ``ds = dh - dG x - G dx``).

For ``vjp``, with cotangents ``(gx, gy, gz)`` on ``(x, y, z)`` and ``K``
symmetric, ``<g, K^{-1} r> = <K^{-1} g, r>``: one solve ``K [ux; uy; uz] =
[gx; gy; gz]`` and reading off the coefficients of ``r``::

    dl/dq = -ux                          dl/dQ = -(ux x' + x ux') / 2
    dl/db =  uy                          dl/dA = -(y ux' + uy x')
    dl/dh =  uz                          dl/dG = -(z ux' + uz x')

(``Q`` enters only through its symmetric part, so its gradient is symmetric
and ``jvp`` symmetrizes ``dQ``.)

Both reuse the factorization the forward pass made of the KKT system on the
active set ``{i : z_i > s_i}`` of its final iterate (``QPSolution.context``,
see ``_polish``), i.e. the limit of ``K`` as ``W_i -> 0`` on active rows and
``W_i -> inf`` on inactive ones: active rows keep ``G_i dx = dh_i - dG_i x``,
inactive rows get ``dz_i = 0``. This system is well conditioned (no ``s / z``
ratios), so duals' derivatives are as accurate as the primal's; the solves are
triangular solves with iterative refinement, no new factorization.

Degenerate rows (tight with a zero multiplier, ``s_i = z_i = 0``) have no
derivative; the rule ``z_i > s_i`` of the final iterate decides whether such a
row is treated as active or inactive, which gives one of the one-sided
derivatives: finite, and exact on that side. Linearly dependent active rows
give a singular system; the regularized, refined solve returns a finite
solution of it. Rows with ``h_i = +inf`` are not constraints: their ``dh`` is
ignored and their gradients are zero.

Lanes whose status is not SOLVED get zero derivatives; their neighbours are
unaffected.
"""

from __future__ import annotations

import math

from ._kkt import mtv, mv
from ._polish import solve_active
from ._problem import ARG_NAMES, CORE_RANK
from ._types import QPGrads, QPSolution, QPTangents, Status


def _context(sol):
    ctx = getattr(sol, "context", None)
    if ctx is None:
        raise ValueError("sol must be the QPSolution returned by optnet.solve (its context "
                         "holds the factorization the derivatives reuse).")
    return ctx


def _lanes_of(ctx, name, v, core_shape, *, like=None):
    """Bring a user (co)tangent to canonical lane form (B|1, *core), checking its shape.

    ``like`` names the argument of ``solve`` whose shape ``v`` must have; without
    it ``v`` must have the full batch shape.
    """
    xp, prob = ctx.xp, ctx.prob
    if v is None:
        return None
    v = ctx.asarray(v)
    bs = prob.batch_shape
    want = prob.in_shapes[like] if like else (*bs, *core_shape)
    if tuple(v.shape) != tuple(want):
        raise ValueError(f"{name} must have shape {tuple(want)}; received shape "
                         f"{tuple(v.shape)}.")
    if not (xp.isdtype(v.dtype, "real floating") or xp.isdtype(v.dtype, "integral")):
        raise ValueError(f"{name} must have a real floating dtype; received dtype {v.dtype}.")
    v = xp.astype(v, prob.dtype, copy=False)
    rank = len(core_shape)
    B = math.prod(bs)
    batch_v = tuple(v.shape[: v.ndim - rank])
    if math.prod(batch_v) == 1 and B != 1:
        return xp.reshape(v, (1, *core_shape))
    v = xp.broadcast_to(v, (*bs, *core_shape))
    return xp.reshape(v, (B, *core_shape))


def _sum_to_shape(xp, g, shape, batch_shape, rank):
    """Sum a per-lane gradient g (B, *core) to the user's input shape (broadcast adjoint)."""
    core = tuple(g.shape[1:])
    g = xp.reshape(g, (*batch_shape, *core))
    in_batch = tuple(shape[: len(shape) - rank])
    lead = len(batch_shape) - len(in_batch)
    if lead:
        g = xp.sum(g, axis=tuple(range(lead)))
    axes = tuple(i for i, d in enumerate(in_batch) if d == 1 and batch_shape[lead + i] != 1)
    if axes:
        g = xp.sum(g, axis=axes, keepdims=True)
    return xp.reshape(g, shape)


def _masked_point(ctx):
    """The solution with failed lanes zeroed (so that 0 * NaN never reaches a gradient)."""
    xp = ctx.xp
    ok = ctx.status == int(Status.SOLVED)
    k = ok[:, None]

    def m(v):
        return xp.where(k, v, 0.0)

    return ok, m(ctx.x), m(ctx.y), m(ctx.z)


def _kkt_solve(ctx, ok, rx, ry, rz):
    """Solve the active-set KKT system for ``(dx, dy, dz)``; zero in lanes that are not ``ok``.

    Active rows keep ``G_i dx = rz_i``; inactive rows have ``dz_i = 0``.
    """
    xp, prob = ctx.xp, ctx.prob
    system = ctx.system
    k = ok[:, None]
    rx = xp.where(k, rx, 0.0)
    parts = []
    if prob.m:
        parts.append(xp.where(k, ry, 0.0))
    if prob.p:
        parts.append(xp.where(k & system.act, rz, 0.0))
    rnu = None
    if parts:
        rnu = xp.concat(parts, axis=-1) if len(parts) > 1 else parts[0]
        rnu = rnu[..., None]
    # Every refinement step, not only those that gain (lanes=None): the backward may run
    # under torch.func's vmap (jacrev), where no value may steer Python. Unrolled: JAX
    # transposes this linear map for reverse mode, which it cannot do through a loop.
    u, v = solve_active(xp, ctx.ops, system, rx[..., None], rnu, ctx.cfg.polish_refine,
                        None, unrolled=True, prob=prob)
    dx = xp.where(k, u[..., 0], 0.0)
    dy = dz = None
    if prob.m:
        dy = xp.where(k, v[:, : prob.m, 0], 0.0)
    if prob.p:
        dz = xp.where(k & system.act, v[:, prob.m:, 0], 0.0)
    return dx, dy, dz


def _outer2(xp, a1, b1, a2, b2):
    """``a1 b1' + a2 b2'`` per lane (a (B, r), b (B, c)) as one product of rank 2: one
    (B, r, c) array written, instead of two outer products, their sum and its scaling
    (at batch 128, n = p = 100, 40 MB fewer fresh pages for the gradients of Q and G)."""
    return xp.stack((a1, a2), axis=-1) @ xp.stack((b1, b2), axis=-2)


def vjp(sol: QPSolution, dx, dz=None, dy=None, *, wrt=None) -> QPGrads:
    """Gradients of a scalar loss with respect to ``Q, q, G, h, A, b``.

    Parameters
    ----------
    sol : QPSolution
        The result of :func:`optnet.solve`.
    dx : array, shape (*batch, n)
        Gradient of the loss with respect to ``sol.x``.
    dz : array, shape (*batch, p), optional
        Gradient with respect to the inequality duals ``sol.z``.
    dy : array, shape (*batch, m), optional
        Gradient with respect to the equality duals ``sol.y``.
    wrt : iterable of str, optional
        The inputs whose gradients are wanted, among ``"Q", "q", "G", "h", "A", "b"``
        (default: all): the others are not computed and come back ``None`` (the
        gradients of ``Q``, ``G`` and ``A`` each cost a (*batch, rows, n) product).

    Returns
    -------
    QPGrads
        Fields ``Q, q, G, h, A, b``, each with the shape of the argument given
        to ``solve`` (``None`` for arguments not given or not in ``wrt``). An
        argument shared by the batch (broadcast) gets the SUM of the per-problem
        gradients. Lanes that are not SOLVED contribute zero.
    """
    if wrt is None:
        want = set(ARG_NAMES)
    else:
        want = {wrt} if isinstance(wrt, str) else set(wrt)
        if not want <= set(ARG_NAMES):
            raise ValueError(f"wrt: expected names among {ARG_NAMES}, got {sorted(want)}")
    ctx = _context(sol)
    xp, prob = ctx.xp, ctx.prob
    gx = _lanes_of(ctx, "dx", dx, (prob.n,), like=None)
    gz = _lanes_of(ctx, "dz", dz, (prob.p,), like=None) if prob.p else None
    gy = _lanes_of(ctx, "dy", dy, (prob.m,), like=None) if prob.m else None
    ok, x, y, z = _masked_point(ctx)
    B = ok.shape[0]

    def full(v, k):
        if v is None:
            return xp.zeros((B, k), dtype=prob.dtype, device=prob.device)
        return xp.broadcast_to(v, (B, k))

    ux, uy, uz = _kkt_solve(ctx, ok, gx, full(gy, prob.m) if prob.m else None,
                            full(gz, prob.p) if prob.p else None)
    grads = {"q": -ux}
    if "Q" in want:
        grads["Q"] = _outer2(xp, -0.5 * ux, x, -0.5 * x, ux)
    if prob.m:
        if "A" in want:
            grads["A"] = _outer2(xp, -y, ux, -uy, x)
        grads["b"] = uy
    if prob.p:
        if "G" in want:
            grads["G"] = _outer2(xp, -z, ux, -uz, x)
        grads["h"] = uz
    out = {}
    for name, shape in prob.in_shapes.items():
        if name not in want:
            continue
        rank = CORE_RANK[name]
        g = grads.get(name)
        if g is None:   # a block with zero rows
            out[name] = xp.zeros(shape, dtype=prob.out_dtype, device=prob.device)
            continue
        g = _sum_to_shape(xp, g, shape, prob.batch_shape, rank)
        out[name] = xp.astype(g, prob.out_dtype, copy=False)
    return QPGrads(**{k: out.get(k) for k in QPGrads._fields})


def jvp(sol: QPSolution, dQ=None, dq=None, dG=None, dh=None, dA=None, db=None) -> QPTangents:
    """Forward-mode derivative: the tangents of the solution for given input tangents.

    Parameters
    ----------
    sol : QPSolution
        The result of :func:`optnet.solve`.
    dQ, dq, dG, dh, dA, db : arrays, optional
        Tangents with the shapes of the arguments given to ``solve`` (``None``:
        zero). ``dQ`` is symmetrized; ``dh`` is ignored where ``h`` is ``+inf``.

    Returns
    -------
    QPTangents
        ``x`` (*batch, n), ``z`` (*batch, p), ``y`` (*batch, m), ``s`` (*batch, p):
        the directional derivatives of ``sol.x, sol.z, sol.y, sol.s``. Zero in
        lanes that are not SOLVED.
    """
    ctx = _context(sol)
    xp, prob = ctx.xp, ctx.prob
    given = {"dQ": dQ, "dq": dq, "dG": dG, "dh": dh, "dA": dA, "db": db}
    t = {}
    for name, v in given.items():
        arg = name[1:]
        if v is None:
            continue
        if arg not in prob.in_shapes:
            raise ValueError(f"{name} was given but {arg} was not given to solve.")
        rank = CORE_RANK[arg]
        core = prob.in_shapes[arg][len(prob.in_shapes[arg]) - rank:]
        if (arg in ("G", "h") and prob.p == 0) or (arg in ("A", "b") and prob.m == 0):
            _lanes_of(ctx, name, v, core, like=arg)   # shape check only
            continue
        t[arg] = _lanes_of(ctx, name, v, core, like=arg)
    ok, x, y, z = _masked_point(ctx)
    B = ok.shape[0]
    rx = xp.zeros((B, prob.n), dtype=prob.dtype, device=prob.device)
    if "Q" in t:
        dQs = 0.5 * (t["Q"] + xp.matrix_transpose(t["Q"]))
        rx = rx - mv(dQs, x)
    if "q" in t:
        rx = rx - t["q"]
    ry = rz = None
    if prob.m:
        ry = xp.zeros((B, prob.m), dtype=prob.dtype, device=prob.device)
        if "A" in t:
            rx = rx - mtv(t["A"], y)
            ry = ry - mv(t["A"], x)
        if "b" in t:
            ry = ry + t["b"]
    if prob.p:
        rz = xp.zeros((B, prob.p), dtype=prob.dtype, device=prob.device)
        if "G" in t:
            dG = xp.where(prob.h_free[:, :, None], 0.0, t["G"])
            rx = rx - mtv(dG, z)
            rz = rz - mv(dG, x)
        if "h" in t:
            rz = rz + t["h"]
    dx, dy, dz = _kkt_solve(ctx, ok, rx, ry, rz)
    ds = dz
    if prob.p:
        # ds = dh - dG x - G dx (zero on free rows).
        ds = rz - mv(prob.G, dx)
        ds = xp.where(ok[:, None] & ~prob.h_free, ds, 0.0)
    else:
        dz = ds = xp.zeros((B, 0), dtype=prob.dtype, device=prob.device)
    if not prob.m:
        dy = xp.zeros((B, 0), dtype=prob.dtype, device=prob.device)
    bs = prob.batch_shape

    def out(v):
        return xp.astype(xp.reshape(v, (*bs, *v.shape[1:])), prob.out_dtype)

    return QPTangents(x=out(dx), z=out(dz), y=out(dy), s=out(ds))
