"""``optnet.torch.solve(..., compiled=True)``: torch tensors solved by compiled XLA programs.

The eager iteration is about 340 array operations per interior-point step, each a
separate call; for small problems that overhead, not the arithmetic, decides the time
(``benchmarks/RESULTS.md``). JAX compiles the same core into one program per shape
(``optnet.jax.solve``: the iteration a ``lax.while_loop``), which runs a small solve in
well under a millisecond. This adapter hands CPU tensors to three such programs as NumPy
views and the results back as tensors:

* forward: the solution ``(x, z, y)``, the statuses and, when a gradient is wanted, the
  arrays of the solution's context (the factored active-set KKT system the derivatives
  reuse, the solution, the data: :class:`_Residuals`), so that backward does not solve
  again;
* backward: the core's adjoint (``optnet.vjp``: one refined solve with that factorization)
  applied to the cotangents of ``x``, ``z`` and ``y``;
* forward mode: ``jax.jvp`` at the saved inputs (it solves again: forward mode has no
  residuals to keep from the forward call).

The derivatives are the core's (``_adjoint``), those of every other path to rounding.
(``jax.vjp`` of ``optnet.jax.solve`` would serve too, by JAX's transposition of the
forward-mode rule, but its forward program then linearizes that rule as well and hands
backward 45 arrays for n = 10, the context 23: what the adjoint reads, and nothing more.)
Each new shape, dtype or option set compiles once per process (seconds: about 3 s for
forward and backward at n = 10 on a 2-core CPU, with ``backends.jax.compiler_options``).

Float64 tensors need JAX's 64-bit mode: the programs are traced and run inside
``jax.enable_x64(True)``, whatever the global setting, so ``compiled=True`` works in any
process. Only CPU tensors and ``torch.autograd`` (backward and ``forward_ad``) are
supported: ``torch.func`` transforms need the default path.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .._pdipm import known_structure

NAMES = ("Q", "q", "G", "h", "A", "b")


def _jax():
    try:
        import jax
    except ImportError as exc:  # pragma: no cover - exercised without jax only
        raise ImportError("optnet.torch.solve(compiled=True) runs the solve as a JAX program; "
                          "install JAX (pip install 'optnet[jax]') or use compiled=False."
                          ) from exc
    return jax


class _Static:
    """The non-array part of a solution's context (shapes, settings, the backend), kept
    as the auxiliary data of :class:`_Residuals`: compared by identity, so that the
    backward program compiles once per forward program (each of whose traces makes one)."""

    def __init__(self, rebuild):
        self.rebuild = rebuild


@functools.cache
def _residuals_class():
    jax = _jax()

    @jax.tree_util.register_pytree_node_class
    class _Residuals:
        """The arrays of a solution's context (``_pipeline.Context``) as a JAX pytree, with
        the function that rebuilds the context from them (:class:`_Static`)."""

        def __init__(self, leaves, static):
            self.leaves, self.static = tuple(leaves), static

        def tree_flatten(self):
            return self.leaves, self.static

        @classmethod
        def tree_unflatten(cls, static, leaves):
            return cls(leaves, static)

        def context(self):
            return self.static.rebuild(list(self.leaves))

    return _Residuals


@functools.cache
def _programs():
    """The jitted programs (built on first use: importing JAX takes a second)."""
    jax = _jax()
    from .. import _adjoint, _lanes
    from .._types import QPSolution
    from .jax_autodiff import _qp, _solve

    def primal(options, init, *args):
        x, z, y, st = _qp(options, *args, init)
        return (x, z, y), st

    def forward(options, args, init):
        return primal(options, init, *args)

    def forward_saving(options, args, init):
        sol = _solve(options, args, init)
        leaves, rebuild = _lanes.split_arrays(sol.context)
        return (sol.x, sol.z, sol.y), sol.status, _residuals_class()(leaves, _Static(rebuild))

    def backward(residuals, cotangents):
        sol = QPSolution(*(None,) * (len(QPSolution._fields) - 1), context=residuals.context())
        return tuple(_adjoint.vjp(sol, *cotangents))

    def tangent(options, args, init, tangents):
        _, dxzy, _ = jax.jvp(functools.partial(primal, options, init), args, tangents,
                             has_aux=True)
        return dxzy

    from ..backends.jax import compiler_options

    jit = functools.partial(jax.jit, compiler_options=compiler_options())
    return (jit(forward, static_argnums=0), jit(forward_saving, static_argnums=0),
            jit(backward), jit(tangent, static_argnums=0))


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
        forward, forward_saving, _, _ = _programs()
        # The structure an eager solve reads on the host (bounds, a diagonal Q), read here
        # from the data: the programs compiled for it take the structured path.
        static = (None if tol is None else float(tol), None if max_iter is None else int(max_iter))
        structure = known_structure(np, args[0], args[2])
        if structure is not None:
            static += (structure,)
        with jax.enable_x64(True):
            if any(ctx.needs_input_grad[1:]):
                (x, z, y), st, ctx.residuals = forward_saving(static, args, init)
            else:
                (x, z, y), st = forward(static, args, init)
                ctx.residuals = None
        ctx.static, ctx.init = static, init
        ctx.given = tuple(a is not None for a in tensors)
        ctx.save_for_forward(*(a for a in tensors if a is not None))
        out = tuple(_tensor(a) for a in (x, z, y, st))
        ctx.mark_non_differentiable(out[3])
        return out

    @staticmethod
    def backward(ctx, gx, gz, gy, _gstatus):
        """The core's adjoint on the forward call's context, applied to the cotangents."""
        jax = _jax()
        if ctx.residuals is None:  # pragma: no cover - autograd only calls this when needed
            raise RuntimeError("compiled solve: backward without residuals")
        cot = tuple(g.detach().contiguous().numpy() for g in (gx, gz, gy))
        with jax.enable_x64(True):
            grads = _programs()[2](ctx.residuals, cot)
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
