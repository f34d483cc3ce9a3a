"""``optnet.torch.solve(..., compiled=True)``: torch tensors solved by compiled XLA programs.

The eager iteration is about 340 array operations per interior-point step, each a
separate call; for small problems that overhead, not the arithmetic, decides the time
(``benchmarks/RESULTS.md``). JAX compiles the same core into one program per shape
(``optnet.jax.solve``: the iteration a ``lax.while_loop``), which runs a small solve in
well under a millisecond. This adapter hands CPU tensors to three such programs as NumPy
views and the results back as tensors:

* forward: the solution ``(x, z, y)``, the statuses and, when a gradient is wanted, the
  residuals of ``jax.vjp`` (the closure ``jax.vjp`` returns is a pytree whose leaves are
  the arrays the adjoint needs: the factorization of the active set, the solution), so
  that backward does not solve again;
* backward: that closure applied to the cotangents of ``x``, ``z`` and ``y``;
* forward mode: ``jax.jvp`` at the saved inputs (it solves again: forward mode has no
  residuals to keep from the forward call).

The derivatives are those of ``optnet.jax.solve`` (the core's KKT adjoint, transposed by
JAX), hence those of every other path to rounding. Each new shape, dtype or option set
compiles once per process (seconds: 13 s for forward and backward at n = 10).

Float64 tensors need JAX's 64-bit mode: the programs are traced and run inside
``jax.enable_x64(True)``, whatever the global setting, so ``compiled=True`` works in any
process. Only CPU tensors and ``torch.autograd`` (backward and ``forward_ad``) are
supported: ``torch.func`` transforms need the default path.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

NAMES = ("Q", "q", "G", "h", "A", "b")


def _jax():
    try:
        import jax
    except ImportError as exc:  # pragma: no cover - exercised without jax only
        raise ImportError("optnet.torch.solve(compiled=True) runs the solve as a JAX program; "
                          "install JAX (pip install 'optnet[jax]') or use compiled=False."
                          ) from exc
    return jax


@functools.cache
def _programs():
    """The three jitted programs (built on first use: importing JAX takes a second)."""
    jax = _jax()
    from .jax_autodiff import _qp

    def primal(options, init, *args):
        x, z, y, st = _qp(options, *args, init)
        return (x, z, y), st

    def forward(options, args, init):
        return primal(options, init, *args)

    def forward_vjp(options, args, init):
        xzy, vjp, st = jax.vjp(functools.partial(primal, options, init), *args, has_aux=True)
        return xzy, st, vjp

    def backward(vjp, cotangents):
        return vjp(cotangents)

    def tangent(options, args, init, tangents):
        _, dxzy, _ = jax.jvp(functools.partial(primal, options, init), args, tangents,
                             has_aux=True)
        return dxzy

    return (jax.jit(forward, static_argnums=0), jax.jit(forward_vjp, static_argnums=0),
            jax.jit(backward), jax.jit(tangent, static_argnums=0))


def _host(a, name):
    """A CPU tensor as a NumPy view (None stays None)."""
    if a is None:
        return None
    if a.device.type != "cpu":
        raise ValueError(f"optnet.torch.solve(compiled='jax') takes CPU tensors; received "
                         f"{name} on {a.device}. Use compiled='torch' (or True) on other "
                         "devices.")
    return a.detach().resolve_conj().resolve_neg().numpy()


def _tensor(a):
    # np.array copies out of the JAX buffer: the tensor owns writable memory.
    return torch.from_numpy(np.array(a))


class CompiledQPFunction(torch.autograd.Function):
    """``(options, Q, q, G, h, A, b) -> (x, z, y, status)`` through compiled JAX programs.

    The function behind :func:`optnet.torch.solve` with ``compiled=True``; ``options`` is
    ``(tol, max_iter, init)`` with ``init`` None or a mapping of tensors. Outputs ``x``
    (*batch, n), ``z`` (*batch, p), ``y`` (*batch, m) are differentiable by backward and
    forward mode (``torch.autograd.forward_ad``); ``status`` (*batch) is not.
    """

    @staticmethod
    def forward(ctx, options, Q, q, G, h, A, b):
        jax = _jax()
        tol, max_iter, init = options
        tensors = (Q, q, G, h, A, b)
        args = tuple(_host(a, k) for k, a in zip(NAMES, tensors))
        if init is not None:
            init = {k: _host(a, f"init[{k!r}]") for k, a in init.items()}
        forward, forward_vjp, _, _ = _programs()
        static = (None if tol is None else float(tol), None if max_iter is None else int(max_iter))
        with jax.enable_x64(True):
            if any(ctx.needs_input_grad[1:]):
                (x, z, y), st, ctx.vjp = forward_vjp(static, args, init)
            else:
                (x, z, y), st = forward(static, args, init)
                ctx.vjp = None
        ctx.static, ctx.init = static, init
        ctx.given = tuple(a is not None for a in tensors)
        ctx.save_for_forward(*(a for a in tensors if a is not None))
        out = tuple(_tensor(a) for a in (x, z, y, st))
        ctx.mark_non_differentiable(out[3])
        return out

    @staticmethod
    def backward(ctx, gx, gz, gy, _gstatus):
        """The forward call's ``jax.vjp`` closure applied to the cotangents."""
        jax = _jax()
        if ctx.vjp is None:  # pragma: no cover - autograd only calls this when needed
            raise RuntimeError("compiled solve: backward without residuals")
        cot = tuple(g.detach().contiguous().numpy() for g in (gx, gz, gy))
        with jax.enable_x64(True):
            grads = _programs()[2](ctx.vjp, cot)
        return (None, *(_tensor(g) if (given and need) else None
                        for g, given, need in zip(grads, ctx.given, ctx.needs_input_grad[1:])))

    @staticmethod
    def jvp(ctx, _options_dot, *tangents):
        """Forward mode: ``jax.jvp`` at the saved inputs (solves again)."""
        jax = _jax()
        saved = iter(ctx.saved_tensors)
        primals = tuple(_host(next(saved), k) if g else None for k, g in zip(NAMES, ctx.given))
        dots = tuple(None if p is None else
                     np.zeros_like(p) if t is None else _host(t, f"the tangent of {k}")
                     for k, p, t in zip(NAMES, primals, tangents))
        with jax.enable_x64(True):
            dx, dz, dy = _programs()[3](ctx.static, primals, ctx.init, dots)
        return _tensor(dx), _tensor(dz), _tensor(dy), None
