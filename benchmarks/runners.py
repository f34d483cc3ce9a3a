"""One small runner per QP solver / layer.

Every runner has the same shape::

    setup_<name>(prob, dtype) -> Prepared(forward, forward_backward, note)

``prob`` is the float64 NumPy problem of :mod:`problems`; the runner converts
it once, outside the timed region, to its own framework and ``dtype``.
``forward()`` solves the whole batch and returns the primal solution as a
NumPy array (used for the accuracy column); ``forward_backward()`` solves and
back-propagates the loss ``sum(x)`` to all of ``Q, q, G, h``, or is ``None``
where the solver has no derivatives.

Competitors are only imported and called here; none of their code is copied.
A solver that is not installed (or refuses to start, e.g. a licence) is
reported by :func:`availability` with the reason, and the harness skips it.
"""

from __future__ import annotations

import functools
import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Prepared:
    forward: Callable[[], np.ndarray]
    forward_backward: Callable[[], object] | None
    note: str = ""
    jit: bool = False  # first call includes compilation (reported separately)


@dataclass
class SolverSpec:
    key: str
    label: str
    framework: str
    setup: Callable
    serial: bool = False  # loops over the batch one problem at a time
    dtypes: tuple = ("float64", "float32")
    needs: tuple = ()  # modules that must import
    competitor: bool = True  # counted in "fastest competitor"
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers


def _npdtype(dtype: str):
    return np.dtype(dtype)


def _torch_inputs(prob, dtype, requires_grad):
    import torch

    td = getattr(torch, dtype)
    return [torch.tensor(prob[k], dtype=td).requires_grad_(requires_grad) for k in "QqGh"]


def _torch_fb(call, tensors):
    """forward + backward of sum(x) w.r.t. all inputs."""
    import torch

    def run():
        x = call(*tensors)
        return torch.autograd.grad(x.sum(), tensors)

    return run


_JAX_READY = False


def _jax():
    global _JAX_READY
    import jax

    if not _JAX_READY:
        jax.config.update("jax_enable_x64", True)
        jax.config.update("jax_platforms", "cpu")
        _JAX_READY = True
    return jax


def _block(tree):
    jax = _jax()
    return jax.block_until_ready(tree)


# --------------------------------------------------------------------------- optnet


def _optnet():
    return importlib.import_module("optnet")


def setup_optnet_numpy(prob, dtype):
    optnet = _optnet()
    Q, q, G, h = (np.ascontiguousarray(prob[k], dtype=_npdtype(dtype)) for k in "QqGh")

    def fwd():
        return np.asarray(optnet.solve(Q, q, G, h).x)

    fb = None
    note = ""
    if hasattr(optnet, "vjp"):
        ones = np.ones(Q.shape[:-1], dtype=Q.dtype)

        def fb():
            sol = optnet.solve(Q, q, G, h)
            return optnet.vjp(sol, ones)
    else:
        note = "optnet.vjp not available yet"
    return Prepared(fwd, fb, note)


def setup_optnet_torch(prob, dtype):
    import torch

    ot = importlib.import_module("optnet.torch")
    solve = ot.solve
    plain = _torch_inputs(prob, dtype, False)
    grad = _torch_inputs(prob, dtype, True)

    def fwd():
        with torch.no_grad():
            return solve(*plain).numpy()

    return Prepared(fwd, _torch_fb(solve, grad))


def setup_optnet_torch_compiled(prob, dtype, kind="jax"):
    """``optnet.torch.solve(compiled=kind)``: ``"jax"`` (XLA programs) or ``"torch"``
    (the iteration compiled by ``torch.compile``)."""
    import torch

    ot = importlib.import_module("optnet.torch")
    plain = _torch_inputs(prob, dtype, False)
    grad = _torch_inputs(prob, dtype, True)

    def solve(*a):
        return ot.solve(*a, compiled=kind)

    def fwd():
        with torch.no_grad():
            return solve(*plain).numpy()

    return Prepared(fwd, _torch_fb(solve, grad), jit=True)


def setup_optnet_jax(prob, dtype):
    jax = _jax()
    import jax.numpy as jnp

    oj = importlib.import_module("optnet.jax")
    args = [jnp.asarray(prob[k], dtype=dtype) for k in "QqGh"]
    f = jax.jit(lambda Q, q, G, h: oj.solve(Q, q, G, h))
    g = jax.jit(jax.grad(lambda Q, q, G, h: oj.solve(Q, q, G, h).sum(), argnums=(0, 1, 2, 3)))
    return Prepared(lambda: np.asarray(f(*args)), lambda: _block(g(*args)), jit=True)


# --------------------------------------------------------------------------- competitors


def setup_qpth(prob, dtype):
    import torch
    from qpth.qp import QPFunction

    td = getattr(torch, dtype)
    e = torch.empty(0, dtype=td)

    def call(Q, q, G, h):
        # Defaults of qpth (eps=1e-12, maxIter=20, PDIPM_BATCHED) except verbosity.
        return QPFunction(verbose=-1)(Q, q, G, h, e, e)

    plain = _torch_inputs(prob, dtype, False)
    grad = _torch_inputs(prob, dtype, True)

    def fwd():
        with torch.no_grad():
            return call(*plain).numpy()

    return Prepared(fwd, _torch_fb(call, grad))


def setup_proxsuite(prob, dtype):
    import torch
    from proxsuite.torch.qplayer import QPFunction

    td = getattr(torch, dtype)
    e = torch.empty(0, dtype=td)
    lower = torch.full(prob["h"].shape, -np.inf, dtype=td)

    def call(Q, q, G, h):
        # QPLayer defaults (eps=1e-9, structural_feasibility=True, omp_parallel=False).
        return QPFunction()(Q, q, e, e, G, lower, h)[0]

    plain = _torch_inputs(prob, dtype, False)
    grad = _torch_inputs(prob, dtype, True)

    def fwd():
        with torch.no_grad():
            return call(*plain).numpy()

    return Prepared(fwd, _torch_fb(call, grad))


def qpax_batched(B, n, dtype, **solver_kw):
    """qpax's solve of a batch of B inequality-constrained QPs ``(Q, q, G, h) -> x`` (no
    equalities), not jitted; qpax's defaults (solver_tol 1e-5, max_iter 30) unless
    ``solver_kw``."""
    jax = _jax()
    import jax.numpy as jnp
    import qpax

    A = jnp.zeros((B, 0, n), dtype=dtype)
    b = jnp.zeros((B, 0), dtype=dtype)
    # explicit PDIP backend
    batched = jax.vmap(lambda Q, q, A, b, G, h: qpax.solve_qp_primal(Q, q, A, b, G, h, **solver_kw))
    return lambda Q, q, G, h: batched(Q, q, A, b, G, h)


def setup_qpax(prob, dtype, **solver_kw):
    jax = _jax()
    import jax.numpy as jnp

    B, n = prob["q"].shape
    args = [jnp.asarray(prob[k], dtype=dtype) for k in "QqGh"]
    batched = qpax_batched(B, n, dtype, **solver_kw)
    f = jax.jit(batched)
    g = jax.jit(jax.grad(lambda Q, q, G, h: batched(Q, q, G, h).sum(), argnums=(0, 1, 2, 3)))
    note = "gradients from qpax's relaxed (smoothed) KKT system"
    if solver_kw:
        note = ", ".join(f"{k}={v}" for k, v in solver_kw.items()) + "; " + note
    return Prepared(lambda: np.asarray(f(*args)), lambda: _block(g(*args)), note, jit=True)


def setup_qpax_tight(prob, dtype):
    """qpax at an accuracy comparable to the other solvers (its default tolerance is 1e-5)."""
    return setup_qpax(prob, dtype, solver_tol=1e-8, max_iter=50)


def setup_cvxpylayers(prob, dtype):
    import cvxpy as cp
    import torch
    from cvxpylayers.torch import CvxpyLayer

    B, p, n = prob["G"].shape
    x = cp.Variable(n)
    Lt = cp.Parameter((n, n))
    qv = cp.Parameter(n)
    Gm = cp.Parameter((p, n))
    hv = cp.Parameter(p)
    # DPP form: 1/2 x'Qx = 1/2 ||L'x||^2 with Q = LL' (the Cholesky factor is
    # computed in torch inside the timed call, so gradients reach Q).
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(Lt @ x) + qv @ x), [Gm @ x <= hv])
    layer = CvxpyLayer(problem, parameters=[Lt, qv, Gm, hv], variables=[x])

    def call(Q, q, G, h):
        L = torch.linalg.cholesky(Q)
        return layer(L.mT, q, G, h)[0]

    plain = _torch_inputs(prob, dtype, False)
    grad = _torch_inputs(prob, dtype, True)

    def fwd():
        with torch.no_grad():
            return call(*plain).numpy()

    note = "default solver (diffcp); Q passed as its Cholesky factor (DPP)"
    return Prepared(fwd, _torch_fb(call, grad), note)


_GUROBI_ENV = None


def _gurobi_env():
    global _GUROBI_ENV
    if _GUROBI_ENV is None:
        import gurobipy as gp

        env = gp.Env(empty=True)
        env.setParam("OutputFlag", 0)
        env.setParam("Threads", 1)
        env.start()
        _GUROBI_ENV = env
    return _GUROBI_ENV


def setup_gurobi(prob, dtype):
    import gurobipy as gp

    env = _gurobi_env()
    Q, q, G, h = (prob[k] for k in "QqGh")
    B, n = q.shape
    Qh = 0.5 * Q  # Gurobi's objective is x'Qx + c'x (no 1/2)

    def fwd():
        out = np.empty((B, n))
        for i in range(B):
            with gp.Model(env=env) as m:
                v = m.addMVar(n, lb=-gp.GRB.INFINITY)
                m.setMObjective(Qh[i], q[i], 0.0, sense=gp.GRB.MINIMIZE)
                m.addMConstr(G[i], v, "<", h[i])
                m.optimize()
                out[i] = v.X
        return out

    return Prepared(fwd, None, "serial loop, 1 thread, model built per problem; no gradients")


def _clarabel_solve(Q, q, G, h, settings):
    import clarabel
    import scipy.sparse as sp

    B, p, n = G.shape
    out = np.empty((B, n))
    cones = [clarabel.NonnegativeConeT(p)]
    for i in range(B):
        s = clarabel.DefaultSolver(
            sp.csc_matrix(np.triu(Q[i])), q[i], sp.csc_matrix(G[i]), h[i], cones, settings
        )
        out[i] = np.asarray(s.solve().x)
    return out


def setup_clarabel(prob, dtype):
    import clarabel

    st = clarabel.DefaultSettings()
    st.verbose = False
    Q, q, G, h = (prob[k] for k in "QqGh")
    return Prepared(
        lambda: _clarabel_solve(Q, q, G, h, st), None, "serial loop; no gradients"
    )


def reference_solution(prob, lanes: int = 8):
    """Tight-tolerance Clarabel solution of the first ``lanes`` problems (or None)."""
    try:
        import clarabel
    except ImportError:
        return None
    st = clarabel.DefaultSettings()
    st.verbose = False
    st.tol_gap_abs = st.tol_gap_rel = st.tol_feas = 1e-11
    st.tol_ktratio = 1e-9
    k = min(lanes, prob["q"].shape[0])
    return _clarabel_solve(*(prob[v][:k] for v in "QqGh"), st)


def setup_linear(prob, dtype):
    """Baseline of the paper's Figure 1: torch.nn.Linear(n, n) on a (B, n) input."""
    import torch

    B, n = prob["q"].shape
    td = getattr(torch, dtype)
    torch.manual_seed(0)
    lin = torch.nn.Linear(n, n, dtype=td)
    X = torch.tensor(prob["q"], dtype=td)
    Xg = X.clone().requires_grad_(True)
    params = [Xg, *lin.parameters()]

    def fwd():
        with torch.no_grad():
            return lin(X).numpy()

    def fb():
        return torch.autograd.grad(lin(Xg).sum(), params)

    return Prepared(fwd, fb, "baseline, not a QP")


# --------------------------------------------------------------------------- registry

SOLVERS: list[SolverSpec] = [
    SolverSpec("optnet", "optnet (numpy)", "numpy", setup_optnet_numpy, competitor=False,
               needs=("optnet",)),
    SolverSpec("optnet-torch", "optnet (torch)", "torch", setup_optnet_torch, competitor=False,
               needs=("torch", "optnet.torch")),
    SolverSpec("optnet-torch-compiled", "optnet (torch, compiled by JAX)", "torch",
               setup_optnet_torch_compiled, competitor=False,
               needs=("torch", "jax", "optnet.torch")),
    SolverSpec("optnet-torch-step", "optnet (torch, iteration by torch.compile)", "torch",
               functools.partial(setup_optnet_torch_compiled, kind="torch"), competitor=False,
               needs=("torch", "optnet.torch")),
    SolverSpec("optnet-jax", "optnet (jax)", "jax", setup_optnet_jax, competitor=False,
               needs=("jax", "optnet.jax")),
    SolverSpec("qpth", "qpth", "torch", setup_qpth, needs=("torch", "qpth.qp")),
    SolverSpec("qpax", "qpax", "jax", setup_qpax, needs=("jax", "qpax")),
    SolverSpec("qpax-tight", "qpax (tol 1e-8)", "jax", setup_qpax_tight, needs=("jax", "qpax")),
    SolverSpec("proxsuite", "proxsuite QPLayer", "torch", setup_proxsuite,
               needs=("torch", "proxsuite.torch.qplayer")),
    SolverSpec("cvxpylayers", "cvxpylayers", "torch", setup_cvxpylayers, serial=True,
               needs=("torch", "cvxpy", "cvxpylayers.torch")),
    SolverSpec("gurobi", "Gurobi (serial)", "numpy", setup_gurobi, serial=True,
               dtypes=("float64",), needs=("gurobipy",)),
    SolverSpec("clarabel", "Clarabel (serial)", "numpy", setup_clarabel, serial=True,
               dtypes=("float64",), needs=("clarabel",)),
    SolverSpec("linear", "torch.nn.Linear", "torch", setup_linear, competitor=False,
               needs=("torch",)),
]

BY_KEY = {s.key: s for s in SOLVERS}


def availability(spec: SolverSpec) -> tuple[bool, str]:
    """(usable, reason-or-version)."""
    versions = []
    for mod in spec.needs:
        try:
            importlib.import_module(mod)
        except Exception as exc:  # ImportError, AttributeError, licence errors...
            return False, f"cannot import {mod}: {type(exc).__name__}: {exc}"
        top = importlib.import_module(mod.split(".")[0])
        versions.append(f"{mod.split('.')[0]} {_version_of(top)}")
    if spec.key == "gurobi":
        try:
            _gurobi_env()
        except Exception as exc:
            return False, f"Gurobi refused to start: {exc}"
    return True, ", ".join(dict.fromkeys(versions))


def _version_of(mod) -> str:
    v = getattr(mod, "__version__", None)
    if v is None:
        try:
            from importlib.metadata import version

            v = version(mod.__name__)
        except Exception:
            v = "?"
    if mod.__name__ == "gurobipy":
        try:
            v = ".".join(map(str, mod.gurobi.version()))
        except Exception:
            pass
    return str(v)


# --------------------------------------------------------------------------- timing


def time_call(fn: Callable[[], object], repeats: int, budget_s: float | None = None) -> dict:
    """One warm-up call, then the best of up to ``repeats`` timed calls.

    If ``budget_s`` is given, timed calls stop early once another one would
    take the timed calls past it (at least one is always made; the warm-up,
    which includes any jit compilation, does not count).
    Returns ``{"first": s, "best": s, "median": s, "times": [...], "result": r}``.
    """
    t0 = time.perf_counter()
    result = fn()
    first = time.perf_counter() - t0
    times: list[float] = []
    while len(times) < repeats:
        if times and budget_s is not None and sum(times) + min(times) > budget_s:
            break
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {
        "first": first,
        "best": min(times),
        "median": float(np.median(times)),
        "times": times,
        "result": result,
    }
