"""PyTorch backend (CPU and CUDA): batched Cholesky and ``solve_triangular``.

On CPU from 32 x 32 on, the Cholesky factors are computed lane by lane by LAPACK on
the tensors' memory (``_lapack``); otherwise by ``cholesky_ex``. Arrays stay on
their device; the loop is a Python loop (eager). Small problems in CPU tensors are
solved by the NumPy backend on views of them (``route``, see ``_torch_via_numpy``).
"""

from __future__ import annotations

import functools
import types
import warnings

import array_api_compat.torch as xp
import numpy as np
import torch

from .._ops import Ops, blank_lanes, lane_shift
from . import _lapack, _torch_via_numpy
from ._eager import cond, while_loop


def _vecdot(a, b, /, *, axis=-1):
    """The inner product as one product kernel (``torch.linalg.vecdot`` takes two, and the
    compatibility layer's makes ten Python-level calls)."""
    if axis != -1:
        a, b = torch.movedim(a, axis, -1), torch.movedim(b, axis, -1)
    return (a[..., None, :] @ b[..., :, None])[..., 0, 0]


# array_api_compat's namespace with a leaner inner product.
namespace = types.SimpleNamespace(**{k: getattr(xp, k) for k in dir(xp) if not k.startswith("__")})
namespace.vecdot = _vecdot
_NP_DTYPE = {torch.float64: np.float64, torch.float32: np.float32}


def _finite_diag(L):
    # A non-finite entry of H reaches the diagonal of L at or after its row. (The
    # diagonal of a Cholesky factor is positive: a comparison finds NaN and inf alike, in
    # one kernel where isfinite takes four.)
    return (torch.diagonal(L, dim1=-2, dim2=-1) < torch.inf).all(dim=-1)


def _shifted(H, shift, scale):
    """A copy of ``H`` with ``shift * scale`` added to its diagonal (one pass over H)."""
    out = H.clone()
    out.diagonal(dim1=-2, dim2=-1).add_(lane_shift(shift) * scale)
    return out


def _cholesky(H, shifts, factor_dtype, scale, skip, overwrite=False):
    overwrite = overwrite or H.dtype != factor_dtype     # (.to makes a copy then)
    H = H.to(factor_dtype)
    scale = scale.to(factor_dtype)
    k = H.shape[-1]
    # (Compiled, cholesky_ex: LAPACK on NumPy arrays would break the graph.)
    if not torch.compiler.is_compiling() and H.device.type == "cpu" and H.dtype in _NP_DTYPE \
            and _lapack.supported(_NP_DTYPE[H.dtype], k):
        # LAPACK lane by lane, on the tensors' memory (see _lapack): about twice as
        # fast as cholesky_ex at 100 x 100. The factor is the transpose of the
        # returned upper-triangular array (a view), whose other triangle solves ignore.
        shifts = tuple(t if isinstance(t, float) else t.detach().cpu().numpy()
                       for t in shifts)
        U, ok = _lapack.factor_lanes(H.detach().contiguous().numpy(), shifts,
                                     scale.detach().contiguous().numpy(),
                                     skip.cpu().numpy(), overwrite=overwrite)
        return torch.from_numpy(U).mT, torch.from_numpy(ok)
    if len(shifts) == 1:
        # One try with a shift per lane (the interior point's): no host read, and nothing
        # blanked or replaced, since a skipped or failed lane's factor is never used.
        A = H if overwrite else H.clone()
        A.diagonal(dim1=-2, dim2=-1).add_(lane_shift(shifts[0]) * scale)
        L, info = torch.linalg.cholesky_ex(A)
        return L, ((info == 0) & _finite_diag(L)) | skip
    # Skipped lanes are blanked unconditionally (a selection costs less than the host
    # read that would tell whether any lane is skipped).
    H, scale = blank_lanes(xp, H, scale, skip)
    eye = torch.eye(k, dtype=H.dtype, device=H.device)
    L, info = torch.linalg.cholesky_ex(_shifted(H, shifts[0], scale))
    ok = (info == 0) & _finite_diag(L)
    if not bool(ok.all()):
        for shift in shifts[1:]:
            bad = torch.nonzero(~ok).flatten()
            Lb, infob = torch.linalg.cholesky_ex(_shifted(H[bad], shift, scale[bad]))
            okb = (infob == 0) & _finite_diag(Lb)
            L = L.index_copy(0, bad, torch.where(okb[:, None, None], Lb, L[bad]))
            ok = ok.index_copy(0, bad, okb)
            if bool(ok.all()):
                break
        L = torch.where(ok[:, None, None], L, eye)
    return L, ok      # in factor_dtype: a float32 factor solves in float32


def _solve_triangular(L, R, transpose):
    X = R.to(L.dtype)
    if transpose:
        X = torch.linalg.solve_triangular(L.mT, X, upper=True)
    else:
        X = torch.linalg.solve_triangular(L, X, upper=False)
    return X.to(R.dtype)


def asarray(a):
    """Convert any array (or nested sequence) to a torch tensor (same device if a tensor).

    Host data go through NumPy, so that Python floats stay float64 (torch's own
    default would round them to float32), and strided, negative-stride or
    read-only NumPy arrays are copied to C order rather than refused.
    """
    if isinstance(a, torch.Tensor):
        return a
    if hasattr(a, "__cuda_array_interface__"):
        return torch.as_tensor(a, device="cuda")
    if hasattr(a, "__dlpack__") and not hasattr(a, "__array__"):
        return torch.from_dlpack(a)
    arr = np.asarray(a, order="C")     # one layout: results do not depend on strides
    if not arr.flags.writeable:
        arr = np.array(arr)
    return torch.from_numpy(arr) if arr.dtype != object else torch.as_tensor(a)


def has_float64(device=None) -> bool:
    """float64 is available on every torch device optnet supports (not on MPS)."""
    return getattr(device, "type", "cpu") != "mps"


def quiet():
    """The solver's context: autograd records nothing. (Differentiating through the
    iterations would give wrong gradients -- the shifts, clamps and active-set choices
    are not differentiable -- and is slower than the adjoint: gradients come from
    ``optnet.torch.solve`` or ``optnet.vjp`` / ``optnet.jvp``.)"""
    return torch.no_grad()


def _put_lanes(full, part, idx, inplace=False):
    dtype = torch.promote_types(full.dtype, part.dtype)     # as where() would
    # In place only where autograd records nothing (the solver runs under torch.no_grad,
    # see quiet: with grad mode on these arrays could be in a graph), and not into a
    # broadcast array.
    if inplace and full.dtype == dtype and not torch.is_grad_enabled() \
            and 0 not in full.stride():
        return full.index_copy_(0, idx, part.to(dtype))
    return full.to(dtype).index_copy(0, idx, part.to(dtype))


def _narrow_factors(device) -> bool:
    # Measured on CPU (see Settings.mixed_min_n); on CUDA devices float64 throughput
    # varies by a factor of 30 between models, and nothing was measured: never there.
    return getattr(device, "type", "cpu") == "cpu"


@functools.cache
def compile_step(fn):
    """``fn`` (the interior point's iteration) compiled by ``torch.compile``, whole
    (``fullgraph``: the iteration has no host read, so no graph break is allowed to hide
    one). Compiled once per process and function; torch compiles again for each new
    precision level, settings value and, once a shape has changed, with symbolic shapes
    (``Ops.compile_step``), up to ``STEP_VARIANTS`` programs; past them, the iteration
    runs eagerly (with one warning), never fails. Its tracing warnings about the
    array-compatibility layer's caches and torch's own deprecations are silenced: they
    concern no user code."""
    compiled = torch.compile(fn, fullgraph=True)
    state = {"eager": False}

    @functools.wraps(fn)
    def run(*args, **kwargs):
        if state["eager"]:
            return fn(*args, **kwargs)
        # Settings are constants of the program (specialize_float): a float that became a
        # symbol would reach Python code that needs its value (the clip's NaN check).
        with warnings.catch_warnings(), \
                torch._dynamo.config.patch(recompile_limit=STEP_VARIANTS, specialize_float=True):
            warnings.filterwarnings("ignore", message=r"Dynamo detected a call to a")
            warnings.filterwarnings("ignore", category=FutureWarning,
                                    module=r"torch\._inductor")
            try:
                return compiled(*args, **kwargs)
            except torch._dynamo.exc.FailOnRecompileLimitHit:
                pass
        state["eager"] = True
        warnings.warn(f"optnet: the compiled interior-point iteration has {STEP_VARIANTS} "
                      "programs already (shapes, dtypes, settings); it runs eagerly from now "
                      "on in this process.", RuntimeWarning, stacklevel=2)
        return fn(*args, **kwargs)

    return run


# Programs of the compiled iteration per process (torch's default is 8: a few problem
# shapes, each compiled static and then with symbolic shapes, at two precision levels).
STEP_VARIANTS = 64


ops = Ops(name="torch", cholesky=_cholesky, solve_triangular=_solve_triangular,
          cond=cond, while_loop=while_loop, eager=True, put_lanes=_put_lanes,
          narrow_factors=_narrow_factors)


def to_host(a):
    return a.detach().cpu().numpy()


def route(args, init=None):
    """Small problems in CPU tensors go through NumPy views (``_torch_via_numpy``)."""
    return _torch_via_numpy.route(args, init)
