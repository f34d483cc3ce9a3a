"""``optnet.torch.solve``: the QP as a ``torch.autograd.Function``.

Backward calls the core reverse-mode derivative (``optnet.vjp``) and forward
mode (``torch.func.jvp``, ``torch.autograd.forward_ad``) the core ``optnet.jvp``;
both reuse the active-set factorization the forward pass made. Written in the
``setup_context`` style so that ``torch.func.grad`` / ``jacrev`` work.
"""

from __future__ import annotations

import torch

from .. import _adjoint, _pipeline, _warm, backends
from . import outputs

NAMES = ("Q", "q", "G", "h", "A", "b")


class QPFunction(torch.autograd.Function):
    """Differentiable batched QP: ``(options, Q, q, G, h, A, b) -> (x, z, y, status, sol)``.

    The ``torch.autograd.Function`` behind :func:`optnet.torch.solve`, which is
    the convenient way to call it (it converts non-tensor inputs and selects
    the outputs). Call it directly as
    ``QPFunction.apply((tol, max_iter), Q, q, G, h, A, b)``: ``options`` is that
    pair, or the triple ``(tol, max_iter, init)`` with a warm start (``None`` for the
    defaults), the other arguments are tensors (or
    ``None``) with the shapes of :func:`optnet.solve`.

    Outputs ``x`` (*batch, n), ``z`` (*batch, p), ``y`` (*batch, m) are
    differentiable; ``status`` (*batch) is not; the last output is the
    :class:`optnet.QPSolution` itself (for inspection, not for differentiation).
    Backward runs :func:`optnet.vjp` and forward mode :func:`optnet.jvp` on the
    factorization of the forward pass; written in the ``setup_context`` style,
    so that ``torch.func.grad``, ``jacrev`` and ``jvp`` work.
    """

    @staticmethod
    def forward(options, Q, q, G, h, A, b):
        """Solve the batch (no autograd recording: the derivatives are the KKT adjoint's)."""
        tol, max_iter, init, step = _options(options)
        sol = _pipeline.solve_arrays(_backend(step), dict(zip(NAMES, (Q, q, G, h, A, b))),
                                     tol, max_iter, init)
        return sol.x, sol.z, sol.y, sol.status, sol

    @staticmethod
    def setup_context(ctx, inputs, output):
        """Keep the solution's factorization for the derivatives; ``status`` has none."""
        # Only the solution's context (the problem and the factorization) is kept: the
        # solution's own x, z, y are this node's outputs, and a reference to them from
        # the node is a cycle through the C++ graph that no garbage collector frees (every
        # training step would keep its batch's factorization alive).
        ctx.sol = _pipeline.context_only(output[4])
        ctx.given = tuple(a is not None for a in inputs[1:])
        ctx.mark_non_differentiable(output[3])
        ctx.set_materialize_grads(True)

    @staticmethod
    def backward(ctx, gx, gz, gy, _gstatus, _gsol):
        """Reverse mode: :func:`optnet.vjp` with the cotangents of ``x``, ``z`` and ``y``."""
        need = [given and need for given, need in zip(ctx.given, ctx.needs_input_grad[1:])]
        g = _adjoint.vjp(ctx.sol, gx, dz=gz if gz.shape[-1] else None,
                         dy=gy if gy.shape[-1] else None,
                         wrt=[k for k, w in zip(NAMES, need) if w])
        grads = [getattr(g, k) if w else None for k, w in zip(NAMES, need)]
        return (None, *grads)

    @staticmethod
    def jvp(ctx, _options_dot, *tangents):
        """Forward mode: :func:`optnet.jvp` with the tangents of the six inputs."""
        given = {f"d{k}": t for k, g, t in zip(NAMES, ctx.given, tangents)
                 if g and t is not None}
        t = _adjoint.jvp(ctx.sol, **given)
        return t.x, t.z, t.y, None, None


def _options(options):
    """``(tol, max_iter[, init[, compile_step]])`` (None: the defaults) as a quadruple, with
    a warm start's tensors detached (a starting point is not differentiated)."""
    tol, max_iter, init, step = (tuple(options or ()) + (None,) * 4)[:4]
    if init is not None:
        init = {k: None if a is None else torch.as_tensor(a).detach()
                for k, a in _warm.as_mapping(init).items()}
    return tol, max_iter, init, bool(step)


def _backend(compile_step: bool):
    """The torch backend; with ``compile_step``, the one whose interior-point iteration
    runs compiled by ``torch.compile`` (``Ops.compile_step``) on the tensors' own device,
    with no detour through NumPy (whose iteration no compiler fuses)."""
    be = backends.load("torch")
    if not compile_step:
        return be
    from ..backends import torch as torch_backend

    return be._replace(ops=be.ops._replace(compile_step=torch_backend.compile_step), route=None)


COMPILED = (False, True, "jax", "torch")


def _compiled_kind(compiled, tensors) -> str | None:
    """What ``compiled`` asks for: None (eager), ``"jax"`` or ``"torch"``; ``True`` is
    ``"jax"`` where every tensor is on the CPU, else ``"torch"``."""
    if not (compiled is True or compiled is False
            or (isinstance(compiled, str) and compiled in COMPILED)):
        raise ValueError(f"compiled must be one of {COMPILED}; received {compiled!r}.")
    if compiled is False:
        return None
    if compiled is True:
        cpu = all(t.device.type == "cpu" for t in tensors if t is not None)
        return "jax" if cpu else "torch"
    return compiled


def _as_tensor(a, like):
    if a is None:
        return None
    if not isinstance(a, torch.Tensor):
        a = torch.as_tensor(a, device=like.device if isinstance(like, torch.Tensor) else None)
    if not (a.is_floating_point() or a.is_complex()) and a.dtype != torch.bool:
        a = a.to(torch.get_default_dtype())
    return a


def solve(Q, q, G=None, h=None, A=None, b=None, *, tol=None, max_iter=None, duals=False,
          status=False, init=None, compiled=False):
    """Solve a batch of QPs, differentiably, in PyTorch.

    Parameters are those of :func:`optnet.solve` (tensors on any one device).

    Parameters
    ----------
    tol, max_iter : optional
        As in :func:`optnet.solve`.
    duals : bool
        Also return the duals ``z`` (*batch, p) and ``y`` (*batch, m).
    status : bool
        Also return the per-problem ``optnet.Status`` codes (*batch, int32).
    init : QPSolution or mapping, optional
        A warm start, as in :func:`optnet.solve` (e.g. the previous training step's
        ``{"x": x, "z": z, "y": y}``); not differentiated.
    compiled : bool or {"jax", "torch"}
        Run compiled code instead of the eager iteration (``docs/guide/performance.md``).
        ``"jax"``: the whole solve and its derivatives as programs compiled by JAX
        (XLA), the fastest path for small problems (at n = 10, forward and backward in
        0.4 of the default path's time at batch 1 and 0.25 at batch 32), after a first
        call per shape and dtype that compiles (seconds); needs JAX (``optnet[jax]``)
        and CPU tensors, and supports ``torch.autograd`` (backward and ``forward_ad``)
        but not ``torch.func``. ``"torch"``: the interior point's iteration compiled by
        ``torch.compile`` on the tensors' own device (about 16 kernels per iteration
        instead of about 250 operations: the path for GPUs, where each operation is a
        launch); the polish and the derivatives stay eager, so everything the default
        path supports works. Its first call compiles for about a minute on a CPU (a few
        seconds once torch's on-disk cache holds the programs), again for each new
        precision level or settings value. ``True``: ``"jax"`` for CPU tensors, else
        ``"torch"``. Same answers, statuses and derivatives as the default path, to
        rounding.

    Returns
    -------
    x : (*batch, n), or the tuple ``(x[, z, y][, status])``.
        Differentiable (backward and forward mode, ``torch.func`` included) with
        respect to all six inputs, through ``x`` and the duals. A tensor shared
        by the batch gets the sum of the per-problem gradients. Problems that
        are not SOLVED have zero gradients (and NaN solutions where infeasible).
    """
    args = [_as_tensor(a, Q) for a in (Q, q, G, h, A, b)]
    kind = _compiled_kind(compiled, args)
    if kind == "jax":
        from .torch_compiled import CompiledQPFunction

        x, z, y, st = CompiledQPFunction.apply(_options((tol, max_iter, init))[:3], *args)
        return outputs(x, z, y, st, duals, status)
    x, z, y, st, _ = QPFunction.apply((tol, max_iter, init, kind == "torch"), *args)
    return outputs(x, z, y, st, duals, status)
