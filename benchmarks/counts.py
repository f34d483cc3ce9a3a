"""Array operations and host reads of one torch solve (forward with polish, and backward).

Counts every PyTorch function and tensor method call (a ``TorchFunctionMode``) of
``optnet.torch.solve`` + ``backward`` of ``sum(x)`` on the OptNet paper's random QP
(``problems.py``), and the host reads among them: ``bool``, ``int``, ``float``,
``item``, ``tolist`` and ``__index__`` on tensors (each one a device synchronisation on
a GPU). Operations per iteration are the solve's total divided by its interior-point
iterations (the issue's all-in count). *Passes over the matrices* are the kernels among
them with an operand of at least ``B n^2`` elements (``Q``, ``G``, ``H``, its factor):
each reads a whole matrix of every lane, which decides the time of large batches once the
matrices no longer fit in the cache (LAPACK called on NumPy views of the tensors, as the
torch backend's CPU Cholesky is, is not seen). These are counts, not timings: they do not
depend on the machine or its load.

With ``--compiled`` the iteration runs compiled by ``torch.compile``
(``optnet.torch.solve(compiled="torch")``): its calls are then counted by the profiler
instead, as the kernels each compiled call launches (the fused kernels inductor
generates and the library calls between them: products, Cholesky, triangular solves),
and the rest of the solve (set-up, polish, backward) as before. The first run compiles
(about a minute on a CPU; torch caches the programs on disk).

Run: ``python benchmarks/counts.py [--n 10] [--batch 1] [--top 25] [--compiled]``.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from problems import make_problem  # noqa: E402

import optnet  # noqa: E402
from optnet.backends import _torch_via_numpy  # noqa: E402

HOST_READS = {"__bool__", "__int__", "__float__", "__index__", "item", "tolist"}


def _name(func) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))


class Counter(TorchFunctionMode):
    """Counts torch calls by name; ``host`` counts the host reads among them."""

    def __init__(self):
        super().__init__()
        self.calls = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = _name(func)
        # Attribute reads (shape, dtype, device, mT) launch nothing: not counted.
        if not name.startswith("getset_descriptor"):
            self.calls[name] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    @property
    def host(self) -> int:
        return sum(c for k, c in self.calls.items() if k.split(".")[-1] in HOST_READS)


# ATen operators that launch no device kernel: metadata queries, a Python number wrapped
# as a 0-d CPU tensor (passed to the kernel as an argument), the reshape of a product.
NO_KERNEL = {"sym_size", "sym_stride", "sym_numel", "dim", "scalar_tensor", "_unsafe_view",
             "lift_fresh"}


class Kernels(TorchDispatchMode):
    """Counts the operators that reach the dispatcher and compute: every ATen operator but
    views (``slice``, ``select``, ``expand``, ``view``, ...) and those of ``NO_KERNEL``. On
    a GPU each one is a kernel launch; Python-level calls that compute nothing
    (``result_type``, ``is_floating_point``, a ``to`` that changes nothing) never get
    here."""

    def __init__(self, matrix_numel: int = 0):
        super().__init__()
        self.calls = collections.Counter()
        # Kernels with an operand of at least ``matrix_numel`` elements (B n^2: Q, G, H,
        # its factor): each reads a whole matrix of every lane, which is what decides the
        # time once the matrices exceed the cache (memory-bound products and solves).
        self.matrix_numel, self.passes = matrix_numel, collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if not func.is_view and name not in NO_KERNEL:
            self.calls[name] += 1
            if self.matrix_numel and any(
                    isinstance(a, torch.Tensor) and a.numel() >= self.matrix_numel
                    for a in (*args, *(kwargs or {}).values())):
                self.passes[name] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.calls.values())


class Both:
    """A :class:`Counter` and a :class:`Kernels` together."""

    def __init__(self, matrix_numel: int = 0):
        self.calls_mode, self.kernels = Counter(), Kernels(matrix_numel)

    def __enter__(self):
        self.calls_mode.__enter__()
        self.kernels.__enter__()
        return self

    def __exit__(self, *exc):
        self.kernels.__exit__(*exc)
        self.calls_mode.__exit__(*exc)


class CompiledCalls:
    """Wraps the compiled iteration (``Ops.compile_step``): each call runs outside the
    counting modes, under the profiler, and ``kernels`` adds up what it launched."""

    # Allocation and layout operators of the compiled wrapper: no computation.
    SKIP = {"aten::empty", "aten::empty_strided", "aten::as_strided", "aten::resize_",
            "aten::view", "aten::reshape", "aten::_reshape_alias", "aten::expand",
            "aten::transpose", "aten::permute", "aten::select", "aten::slice"}

    def __init__(self):
        self.kernels, self.calls, self.modes = 0, 0, None
        self.names = collections.Counter()

    def compiler(self, compile_step):
        def wrap(fn):
            compiled = compile_step(fn)

            def run(*args, **kwargs):
                if self.modes is None:
                    return compiled(*args, **kwargs)
                self.modes.__exit__(None, None, None)
                try:
                    cpu = [torch.profiler.ProfilerActivity.CPU]
                    with torch.profiler.profile(activities=cpu) as prof:
                        out = compiled(*args, **kwargs)
                finally:
                    self.modes.__enter__()
                self.calls += 1
                for e in prof.events():
                    if e.name.startswith("## Call CompiledFxGraph"):
                        for c in e.cpu_children:
                            if c.name not in self.SKIP:
                                self.kernels += 1
                                self.names[c.name.split("_cpp_fused")[0] + " fused"
                                           if "fused" in c.name else c.name] += 1
                return out

            return run
        return wrap


def count(n: int, batch: int, seed: int = 0, dtype=torch.float64, compiled=False,
          device="cpu"):
    """Counters of the forward and the backward pass, the iterations taken, and the
    :class:`CompiledCalls` (None without ``compiled``), on torch tensors on ``device``.

    They are those of the torch backend's own iteration (the path of CUDA tensors): small
    CPU problems would otherwise go through NumPy views, where no torch kernel runs.
    """
    before = _torch_via_numpy.NUMPY_MAX_ENTRIES
    _torch_via_numpy.NUMPY_MAX_ENTRIES = 0
    try:
        return _count(n, batch, seed, dtype, compiled, device)
    finally:
        _torch_via_numpy.NUMPY_MAX_ENTRIES = before


def _count(n, batch, seed, dtype, compiled, device):
    from optnet.backends import torch as torch_backend

    P = make_problem(batch, n, seed=seed)
    Q, q, G, h = (torch.as_tensor(P[k], dtype=dtype, device=device) for k in "QqGh")
    for a in (Q, q, G, h):
        a.requires_grad_(True)
    kw = {}
    calls = None
    if compiled:
        # The profiler sees the fused kernels only where inductor records them.
        torch._inductor.config.cpp.enable_kernel_profile = True
        calls = CompiledCalls()
        before = torch_backend.compile_step
        torch_backend.compile_step = calls.compiler(before)
        kw = {"compiled": "torch"}
    try:
        optnet.torch.solve(Q, q, G, h, **kw).sum().backward()   # warm-up (imports, caches)
        fwd, bwd = Both(batch * n * n), Both(batch * n * n)
        if calls is not None:
            calls.modes = fwd
        with fwd:
            x, status = optnet.torch.solve(Q, q, G, h, status=True, **kw)
        if calls is not None:
            calls.modes = None
    finally:
        if compiled:
            torch_backend.compile_step = before
    # The autograd engine runs backward outside the mode: count the call it makes
    # (the core vjp on the forward's solution) directly.
    sol = optnet.solve(Q.detach(), q.detach(), G, h)
    with bwd:
        optnet.vjp(sol, torch.ones_like(sol.x))
    return fwd, bwd, status, calls


def totals(n: int = 10, batch: int = 1, compiled: bool = False) -> dict:
    """The issue's all-in numbers of one solve: ``kernels`` and ``calls`` (forward with
    polish, and backward; the compiled iteration's kernels included), ``host`` reads,
    the interior-point ``iterations``, and ``kernels_per_iteration``."""
    fb, bb, _, calls = count(n, batch, compiled=compiled)
    return _totals(fb, bb, calls, _iterations(n, batch))


def _totals(fb, bb, calls, iters: int) -> dict:
    """:func:`totals` of counted passes ``fb``, ``bb`` (:class:`Both`), the compiled calls
    (or None) and the iterations."""
    extra = calls.kernels if calls is not None else 0
    kern = fb.kernels.total + bb.kernels.total + extra
    return {"kernels": kern, "calls": fb.calls_mode.total + bb.calls_mode.total + extra,
            "host": fb.calls_mode.host + bb.calls_mode.host, "iterations": iters,
            "kernels_per_iteration": kern / max(iters, 1)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10, help="variables = inequality rows")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--top", type=int, default=25, help="most frequent calls to list")
    ap.add_argument("--compiled", action="store_true",
                    help='the iteration compiled by torch.compile (compiled="torch")')
    args = ap.parse_args(argv)
    fb, bb, status, calls = count(args.n, args.batch, compiled=args.compiled)
    fwd, bwd = fb.calls_mode, bb.calls_mode
    # The iteration count is read outside the counted region.
    iters = _iterations(args.n, args.batch)
    t = _totals(fb, bb, calls, iters)
    total, kern = t["calls"], t["kernels"]
    path = "iteration compiled by torch.compile" if args.compiled else "eager"
    print(f"n = p = {args.n}, batch {args.batch}, float64, torch {torch.__version__}, {path}")
    print(f"interior-point iterations: {iters}; statuses {status.tolist()}")
    if calls is not None:
        print(f"compiled iteration: {calls.calls} calls, {calls.kernels} kernels "
              f"({calls.kernels / max(calls.calls, 1):.1f} per call): "
              f"{dict(calls.names.most_common())}")
        print(f"eager operations outside it (set-up, polish): {fb.kernels.total} kernels, "
              f"{fwd.total} torch calls")
    print(f"torch calls: forward {fwd.total}, backward {bwd.total}, all-in {total}, "
          f"per iteration {total / max(iters, 1):.1f}")
    print(f"kernels (computing operators): forward {fb.kernels.total}, backward "
          f"{bb.kernels.total}, all-in {kern}, per iteration {kern / max(iters, 1):.1f}")
    print(f"host reads: forward {fwd.host}, backward {bwd.host}, all-in {fwd.host + bwd.host}")
    print("most frequent kernels:", (fb.kernels.calls + bb.kernels.calls).most_common(12))
    passes = fb.kernels.passes + bb.kernels.passes
    size = args.batch * args.n ** 2
    print(f"passes over the matrices (kernels with an operand of B n^2 = {size} elements or "
          f"more): forward {sum(fb.kernels.passes.values())}, backward "
          f"{sum(bb.kernels.passes.values())}, per iteration "
          f"{sum(passes.values()) / max(iters, 1):.1f}: {dict(passes.most_common())}"
          + (" (the compiled calls' own not counted)" if calls is not None else ""))
    both = fwd.calls + bwd.calls
    print(f"\nmost frequent calls (forward + backward, top {args.top}):")
    for name, c in both.most_common(args.top):
        print(f"  {c:6d}  {name}")
    reads = {k: c for k, c in both.items() if k.split(".")[-1] in HOST_READS}
    print("\nhost reads by kind:", reads or "none")


def _iterations(n, batch):
    P = make_problem(batch, n)
    Q, q, G, h = (torch.as_tensor(P[k]) for k in "QqGh")
    sol = optnet.solve(Q, q, G, h)
    return int(sol.iterations.max())


if __name__ == "__main__":
    main()
