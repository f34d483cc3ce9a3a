"""``optnet.solve``: the public entry point of the forward pass."""

from __future__ import annotations

import collections
import functools

import numpy as np

from . import backends
from ._lanes import split_arrays
from ._pdipm import known_structure, structure_of
from ._pipeline import solve_arrays
from ._types import STATUS_EXPLANATIONS, QPError, QPSolution, Status
from ._warm import as_mapping


def _convert(args: dict, backend):
    name = backends.infer(args) if backend is None else backend
    be = backends.load(name)
    converted = {}
    for k, a in args.items():
        if a is None:
            converted[k] = None
            continue
        try:
            converted[k] = be.asarray(a)
        except Exception as exc:  # each library raises its own kind
            raise ValueError(
                f"{k} could not be converted to a {name} array (received "
                f"{type(a).__module__}.{type(a).__qualname__}): {exc}") from exc
    return be, converted


def solve(Q, q, G=None, h=None, A=None, b=None, *, backend=None, tol=None, max_iter=None,
          check=False, init=None) -> QPSolution:
    """Solve a batch of convex quadratic programs.

    ::

        minimize_x  1/2 x'Qx + q'x   subject to   Ax = b,  Gx <= h

    Parameters
    ----------
    Q : array, shape (*bQ, n, n)
        Symmetric positive semidefinite (Q = 0 gives an LP); only its symmetric
        part is used. Negative eigenvalues from rounding are tolerated (down to
        -1e-3 after scaling Q to unit diagonal); a problem whose Q is more
        indefinite gets status ``NONCONVEX``.
    q : array, shape (*bq, n)
    G : array, shape (*bG, p, n), optional
    h : array, shape (*bh, p), optional
        ``+inf`` entries mean "no constraint" for that row.
    A : array, shape (*bA, m, n), optional
    b : array, shape (*bb, m), optional
        ``G``/``h`` and ``A``/``b`` come in pairs; either pair may be absent.
        The batch dimensions broadcast NumPy-style; an argument without them is
        shared by every problem.
    backend : {None, "numpy", "array_api_strict", "torch", "jax", "cupy"}
        None infers the library from the inputs; a name converts them to it.
    tol : float, optional
        Relative tolerance on the primal and dual residuals and the gap
        (default 1e-10 in float64; 1e-6 for float32 problems, which are iterated
        in float64; 3e-5 where the backend has no float64).
    max_iter : int, optional
        Iteration limit (default 100); lanes that reach it get ``MAX_ITER``.
    check : bool
        Raise :class:`QPError` if any problem is not ``SOLVED`` (eager only).
    init : QPSolution or mapping, optional
        A warm start: a previous solution (of problems with the same batch shape and
        sizes), or a mapping with ``"x"`` (*batch, n) and optionally ``"z"`` (*batch, p)
        and ``"y"`` (*batch, m). Each problem starts from its point pushed into the
        interior; problems whose point is not finite start cold. The answer is the cold
        start's to the tolerance (see ``docs/algorithm.md``, "Warm start").

    Returns
    -------
    QPSolution
        Arrays of the backend's library with batch shape the broadcast of the
        inputs' batch shapes. The computation runs in float64 if any input is
        float64, else float32; integer inputs are promoted. Not meant for the
        frameworks' autodiff (PyTorch records nothing; JAX's reverse mode stops
        at its loop, and its forward mode would differentiate the iterations
        rather than the solution): derivatives come from :func:`optnet.vjp` /
        :func:`optnet.jvp` on the solution, or from the differentiable
        ``optnet.torch.solve`` and ``optnet.jax.solve``.
    """
    args = {"Q": Q, "q": q, "G": G, "h": h, "A": A, "b": b}
    be, args = _convert(args, backend)
    init = _convert_init(be, init)
    sol = (_solve_jax_compiled(be, args, tol, max_iter, init) if be.ops.name == "jax"
           else solve_arrays(be, args, tol, max_iter, init))
    if check:
        _raise_unless_solved(sol, be.to_host)
    return sol


def _convert_init(be, init):
    """The warm start as a dict of ``be``'s arrays (or None), or ``ValueError``."""
    init = as_mapping(init)
    if init is None:
        return None
    out = {}
    for k, a in init.items():
        try:
            out[k] = None if a is None else be.asarray(a)
        except Exception as exc:  # each library raises its own kind
            raise ValueError(f"init['{k}'] could not be converted to a {be.name} array "
                             f"(received {type(a).__module__}.{type(a).__qualname__}): "
                             f"{exc}") from exc
    return out


def _raise_unless_solved(sol: QPSolution, to_host) -> None:
    status = to_host(sol.status).reshape(-1)
    bad = np.nonzero(status != int(Status.SOLVED))[0]
    if bad.size == 0:
        return
    lines = [f"{bad.size} of {status.size} problems were not solved:"]
    for code in sorted(set(int(c) for c in status[bad])):
        lanes = bad[status[bad] == code]
        shown = ", ".join(str(i) for i in lanes[:10]) + (", ..." if lanes.size > 10 else "")
        st = Status(code)
        lines.append(f"  {st.name} (flat indices {shown}): {STATUS_EXPLANATIONS[st]}")
    raise QPError("\n".join(lines))


# Compiled JAX programs of ``solve``, one per signature (shapes, dtypes, devices, absent
# blocks, options), the most recently used kept.
_JAX_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
JAX_PROGRAMS_KEPT = 16


@functools.cache
def _structure_program(be):
    """``_pdipm.structure_of`` of ``(Q, G)`` as a jitted JAX function of backend ``be``."""
    import jax

    return jax.jit(lambda Q, G: structure_of(be.namespace, Q, G))


def _solve_jax_compiled(be, args: dict, tol, max_iter, init=None):
    """``solve_arrays`` on JAX arrays as one compiled program, reused by every later call
    with the same signature.

    Run op by op, each call would trace and compile its loops afresh (their bodies close
    over the call's arrays, so no compiled program is ever reused): about 35 s per solve
    at n = 40, and XLA's CPU compiler maps code memory for each program, so a long process
    ran out of it (an LLVM "Cannot allocate memory" error) after a few dozen solves of one
    shape. Inside a user's ``jit`` or ``vmap`` (tracers) the solve is traced into the
    user's program instead.
    """
    import jax

    init = init or {}
    arrays = [a for a in (*args.values(), *init.values()) if a is not None]
    if any(isinstance(a, jax.core.Tracer) for a in arrays):
        return solve_arrays(be, args, tol, max_iter, init or None)

    def signature(arrs):
        return tuple(None if a is None else (a.shape, str(a.dtype),
                                             str(getattr(a, "sharding", "")))
                     for a in arrs.values())

    # The structure an eager solve reads on the host (bounds, a diagonal Q: _pdipm), read
    # here from the concrete data, once per call: a program per structure.
    Q, G = args["Q"], args.get("G")
    structure = known_structure(be.namespace, Q, G, _structure_program(be))
    key = (signature(args), tuple(sorted(init)), signature(init), tol, max_iter,
           bool(jax.config.jax_enable_x64), structure)
    prog = _JAX_PROGRAMS.get(key)
    if prog is None:
        box = {}

        def run(arrs, warm):
            leaves, box["rebuild"] = split_arrays(solve_arrays(be, arrs, tol, max_iter,
                                                               warm or None, structure))
            return leaves

        from .backends.jax import compiler_options

        prog = _JAX_PROGRAMS[key] = (jax.jit(run, compiler_options=compiler_options()), box)
        while len(_JAX_PROGRAMS) > JAX_PROGRAMS_KEPT:
            _JAX_PROGRAMS.popitem(last=False)
    _JAX_PROGRAMS.move_to_end(key)
    fn, box = prog
    leaves = fn(args, init)
    return box["rebuild"](leaves)
