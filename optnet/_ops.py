"""The operations the core needs beyond the Array API standard.

A backend (``optnet/backends/``) supplies an :class:`Ops` table; the core is
handed it together with the array namespace ``xp`` and never imports a
framework itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class Backend(NamedTuple):
    """The protocol every backend module declares (``optnet/backends/<name>.py``);
    :func:`optnet.backends.load` checks it and returns this tuple.

    Attributes
    ----------
    name : str
    namespace : module-like
        The Array API namespace ``xp`` of the core.
    asarray : callable ``(a) -> array``
        Converts any array or nested sequence to the backend's arrays.
    quiet : callable ``() -> context manager``
        The solver's context (floating-point warnings off, no autograd recording).
    has_float64 : callable ``(device) -> bool``
    ops : Ops
        The primitives beyond the standard.
    to_host : callable ``(array) -> numpy.ndarray``
        The one host transfer outside the loop's own (``QPError`` messages).
    route : callable ``(args, init) -> (Backend, args, init, back)`` or None, or None
        Optional: for inputs another backend solves faster (small problems in torch CPU
        tensors go through NumPy views of them), that backend, the inputs (and the warm
        start ``init``, a dict or None) converted to it, and a function mapping its
        :class:`optnet.QPSolution` (its context included, so that the derivatives run in
        this backend's arrays) back. None where the inputs stay.
    """

    name: str
    namespace: Any
    asarray: Callable[[Any], Any]
    quiet: Callable[[], Any]
    has_float64: Callable[[Any], bool]
    ops: Any
    to_host: Callable[[Any], Any]
    route: Callable[[dict], Any] | None = None


class Ops(NamedTuple):
    """Backend-supplied primitives.

    Attributes
    ----------
    name : str
        Backend name (``"numpy"``, ``"torch"``, ...).
    cholesky : callable ``(H, shifts, factor_dtype, scale, skip, overwrite=False) -> (factor, ok)``
        ``H`` has shape (B, k, k), symmetric; ``shifts`` is an increasing tuple
        of floats, or a tuple of one (B,) array of per-lane shifts (see
        :func:`lane_shift`); ``scale`` (B, k) is positive; ``skip`` (B,) bool marks lanes
        not to factor (their factor is the identity's and ``ok`` True, whatever
        their ``H``; see :func:`blank_lanes`); ``overwrite`` True allows the
        backend to overwrite ``H`` (a temporary). Factors ``H + shift diag(scale)``
        (a shift relative to the diagonal; in ``factor_dtype``, which may be
        narrower than ``H.dtype``) with, per lane, the first shift for which
        that matrix is numerically positive definite, and returns a boolean
        array ``ok`` (B,). Where every shift fails, ``ok`` is False and the
        factor is that of the identity: a failure never raises and never
        touches other lanes. With a one-entry tuple of a (B,) array (the interior
        point's per-lane try), skipped and failed lanes' factors are unspecified
        (the caller never uses them) and the backend need not read the host.
        ``factor`` is opaque to the core (the lower
        Cholesky factor ``L``, or its inverse where that makes solves faster),
        held in ``factor_dtype`` or ``H.dtype``.
    solve_triangular : callable ``(factor, R, transpose) -> X``
        ``R`` (B, k, r). Solves ``L X = R``, or ``L^T X = R`` when
        ``transpose`` is True; ``X`` has the dtype of ``R`` (the solve itself
        may run in the factor's narrower dtype: the refinement that follows
        every solve computes its residuals in ``R``'s).
    cond : callable ``(pred, true_fn, false_fn) -> value``
        ``lax.cond`` semantics with no operands: ``pred`` is a scalar boolean
        array; both functions take no argument and return the same structure.
    while_loop : callable ``(cond, body, state) -> state``
        ``lax.while_loop`` semantics: ``cond(state)`` is a scalar boolean
        array, ``body`` maps a state to one of the same structure and shapes.
    eager : bool
        True where arrays have concrete values (no tracing): the core may
        then read values on the host and use data-dependent shapes, e.g. to
        iterate only the lanes still running.
    put_lanes : callable ``(full, part, idx, inplace) -> array`` or None
        Optional: ``full`` (B, ...) with the lanes ``idx`` (1-D int array, sorted)
        replaced by ``part`` (len(idx), ...). Without ``inplace`` a copy, ``full``
        not modified; with it (the caller owns ``full``), ``full`` itself is written
        where the backend can (a writable, not broadcast array of the result's dtype)
        and returned. Traced backends' ``idx`` may end in entries ``B`` (padding of
        a fixed-size block, ``_lanes.first_lanes``), whose writes are dropped. (The
        Array API has no scatter: without ``put_lanes`` ``_lanes`` gathers ``part``
        to B lanes and selects.)
    abstract_zeros : callable ``(fn) -> list of arrays`` or None
        Traced backends: zeros shaped and typed like the list of arrays ``fn()``
        returns, from tracing ``fn`` without running it (a loop's first carry of a
        structure only its body computes). None: ``fn`` is run and its result zeroed
        (eager backends never need it; a lockstep run of an eager backend, as the
        tests make, does).
    narrow_factors : callable ``(device) -> bool`` or None
        Whether float32 factorizations and triangular solves are markedly faster
        than float64 ones on ``device`` (a CPU: about twice for the products that
        form ``H``, 1.4x for the factorization). Where True, eager float64
        iterations on problems of ``Settings.mixed_min_n`` or more variables start
        with float32 factors (see ``_pdipm.iteration_problem``). None: never.
    compile_step : callable ``(fn) -> fn`` or None
        Eager backends, optional: a compiler of the interior point's iteration
        (``_pdipm.iterate``, a pure function of its arrays with no host read), returning a
        function of the same signature; the driver calls what it returns instead (the
        torch backend's ``torch.compile``, which fuses the ~250 operations of one
        iteration into a few kernels). None: the iteration runs operation by operation.
    """

    name: str
    cholesky: Callable[..., tuple[Any, Any]]
    solve_triangular: Callable[[Any, Any, bool], Any]
    cond: Callable[[Any, Callable, Callable], Any]
    while_loop: Callable[[Callable, Callable, Any], Any]
    eager: bool = False
    put_lanes: Callable[[Any, Any, Any, bool], Any] | None = None
    narrow_factors: Callable[[Any], bool] | None = None
    abstract_zeros: Callable[[Callable], list] | None = None
    compile_step: Callable[[Callable], Callable] | None = None


def blank_lanes(xp, H, scale, skip):
    """``H`` (B, k, k) and ``scale`` (B, k) with the lanes where ``skip`` (B,) is True
    replaced by the identity and ones: for backends whose Cholesky factors every lane."""
    eye = xp.eye(H.shape[-1], dtype=H.dtype, device=getattr(H, "device", None))
    return xp.where(skip[:, None, None], eye, H), xp.where(skip[:, None], 1.0, scale)


def lane_shift(shift, i=None):
    """``shift`` (a float or a (B,) array) shaped to multiply ``scale`` (B, k), or, with
    ``i``, lane ``i``'s ``scale[i]`` (k,)."""
    if isinstance(shift, float):
        return shift
    return shift[:, None] if i is None else shift[i]
