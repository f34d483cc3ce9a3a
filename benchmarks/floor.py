"""Where optnet's forward pass spends its time, against the floor of its own primitives.

    python benchmarks/floor.py [--backend torch] [--batch 128] [--n 100] [--dtype float64]
        [--repeats 7] [--competitor-s 0.31]

On the OptNet paper's QP (``problems.py``), one instrumented forward pass records every
heavy primitive the solver calls, with its shapes and dtypes, and its time in the solve
(self time: nested primitives are subtracted):

- *forming H*: ``_kkt._factor`` without its nested calls: ``Q + G'W^{-1}G`` per
  interior-point factorization, and ``M'M``, the equality Schur complement, where there are
  equality rows (the polish's active-set system);
- *polish set-up*: ``_polish.active_system`` without its nested calls (``E``, ``E'E``,
  ``Q + rho E'E``);
- *Cholesky*: ``ops.cholesky`` (LAPACK lane by lane on CPU);
- *triangular solves*: ``ops.solve_triangular``;
- *products*: the batched matrix-vector products of ``_kkt`` (``mv``, ``mtv``, ``mm``,
  ``mtm``) with ``Q``, ``G``, ``A``, ``E``;
- *the rest*: the forward time minus all of the above (elementwise arithmetic, reductions,
  selections, lane compaction, Python).

Each recorded call is then replayed alone on arrays of the same shapes, dtypes and layout,
best of 5 in each of two passes, once with its operands in cache and once after a flush of
the caches: the sums
are the **floors**, what the same algorithm would cost with no overhead at all (in cache) and
with no overhead but its operands' trips from memory (cold; a (128, 100, 100) float64 array is
10 MB, and the solve's working set exceeds the last-level cache). The in-cache sum is the
floor proper; the cold one brackets it from above (after a flush the first touch of every
operand misses, and an idle thread pool wakes up: small calls are overcharged). Also printed: the
performance issue's floor model (iterations x one batched Cholesky of the whole batch) and, with
``--competitor-s`` (the fastest competitor's forward + backward time measured by
``run.py`` in the same session), the time a 7x margin would allow.

Prints a markdown table; the numbers are of one run on the machine at hand.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import numpy as np  # noqa: E402
import problems  # noqa: E402

import optnet  # noqa: E402
from optnet import _kkt, _polish, _step, _terminate  # noqa: E402

KINDS = ("forming H", "polish set-up", "Cholesky", "triangular solves", "products")
_PRODUCTS = ("mv", "mtv", "mm", "mtm")


class Recorder:
    """Self times and replay keys of the instrumented primitives."""

    def __init__(self):
        self.stack = []                       # child time accumulated per open call
        self.time = defaultdict(float)        # kind -> self time in the solve
        self.calls = defaultdict(list)        # kind -> replay keys

    def wrap(self, kind, fn, key):
        def spy(*args, **kw):
            self.stack.append(0.0)
            t0 = time.perf_counter()
            out = fn(*args, **kw)
            total = time.perf_counter() - t0
            child = self.stack.pop()
            self.time[kind] += total - child
            if self.stack:
                self.stack[-1] += total
            self.calls[kind].append(key(*args, **kw))
            return out
        return spy


def _dname(dtype) -> str:
    """A dtype's name, "float64" / "float32", for NumPy and torch dtypes alike."""
    try:
        return np.dtype(dtype).name
    except TypeError:
        return str(dtype).replace("torch.", "")


def _meta(a):
    return None if a is None else (tuple(a.shape), _dname(a.dtype), tuple(a.stride())
                                   if hasattr(a, "stride") and callable(a.stride) else None)


def instrument(monkey, rec: Recorder, be):
    """Patch the core's primitives (undone by ``monkey``'s restore list)."""
    def patch(obj, name, new):
        monkey.append((obj, name, getattr(obj, name)))
        setattr(obj, name, new)

    def factor_key(xp, ops, prob, w, delta, skip, factor_dtype, boost=None, narrow=None):
        return (_meta(prob.Q), _meta(prob.G), _meta(prob.A), _dname(factor_dtype))

    patch(_kkt, "_factor", rec.wrap("forming H", _kkt._factor, factor_key))
    patch(_polish, "active_system", rec.wrap(
        "polish set-up", _polish.active_system,
        lambda xp, ops, prob, cfg, pt, lanes, act=None, reuse=None: (_meta(prob.Q),
                                                                      _meta(prob.G))))
    ops = be.ops
    chol = rec.wrap("Cholesky", ops.cholesky,
                    lambda H, shifts, fd, scale, skip, overwrite=False:
                    (tuple(H.shape), _dname(fd), int(np.sum(np.asarray(skip)))))
    trsm = rec.wrap("triangular solves", ops.solve_triangular,
                    lambda L, R, transpose: (_meta(L), tuple(R.shape), _dname(R.dtype), transpose))
    patch(be, "ops", ops._replace(cholesky=chol, solve_triangular=trsm))
    for name in _PRODUCTS:
        fn = getattr(_kkt, name)

        def key(*args, _name=name):
            arrs = args[1:] if _name == "mtm" else args     # mtm(xp, M, R)
            return (_name, _meta(arrs[0]), tuple(arrs[1].shape))
        spy = rec.wrap("products", fn, key)
        for mod in (_kkt, _step, _terminate, _polish):
            if hasattr(mod, name):
                patch(mod, name, spy)


_FLUSH = np.ones(8 << 20)     # 64 MB, twice the last-level cache of the measured machine


def best_of(fn, repeats=5, cold=False):
    """Best time of ``fn`` over ``repeats`` calls; ``cold``: the caches are flushed (a
    64 MB buffer written) before each call, outside the timed region."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if cold:
            np.add(_FLUSH, 1.0, out=_FLUSH)
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


class Replayer:
    """Isolated, in-cache timings of recorded calls (memoized per key)."""

    def __init__(self, be, cold: bool = False):
        self.be, self.xp, self.cold = be, be.namespace, cold
        self.memo = {}
        self.rng = np.random.default_rng(0)

    def arr(self, shape, dtype, spd=False):
        a = self.rng.standard_normal(shape)
        if spd:
            a = np.swapaxes(a, -1, -2) @ a + shape[-1] * np.eye(shape[-1])
        return self.be.asarray(np.ascontiguousarray(a.astype(dtype)))

    def time(self, kind, key):
        if (kind, key) not in self.memo:
            self.memo[kind, key] = getattr(self, "_" + kind.replace(" ", "_").replace("-", "_"))(
                *key)
        return self.memo[kind, key]

    def _forming_H(self, Qm, Gm, Am, fdtype):
        """``Q + G'W^-1 G`` where there are inequalities, and the equality Schur complement
        ``M'M`` (``M = L^-1 A'``, (B, n, m)) where there are equalities (the polish's
        active-set system has only the latter)."""
        xp = self.xp
        (Bq, n, _), _, _ = Qm
        t = 0.0
        if Gm is not None:
            (B, p, _), _, _ = Gm
            Q, G = self.arr((Bq, n, n), fdtype), self.arr((B, p, n), fdtype)
            winv = self.arr((B, p), fdtype)

            def f():
                H = xp.matrix_transpose(G) @ (G * winv[:, :, None])
                H += Q
            t += best_of(f, cold=self.cold)
        if Am is not None:
            (BA, m, _), _, _ = Am
            M = self.arr((BA, n, m), fdtype)
            t += best_of(lambda: xp.matrix_transpose(M) @ M, cold=self.cold)
        return t

    def _polish_set_up(self, Qm, Gm):
        xp = self.xp
        if Gm is None:
            return 0.0
        (B, p, n), dt, _ = Gm
        Q, G = self.arr(Qm[0], dt), self.arr((B, p, n), dt)
        act = self.be.asarray(self.rng.uniform(size=(B, p)) < 0.5)

        def f():
            E = xp.where(act[:, :, None], G, 0.0)
            Q + 0.5 * (xp.matrix_transpose(E) @ E)
        return best_of(f, cold=self.cold)

    def _Cholesky(self, shape, fdtype, skipped):
        B, k, _ = shape
        dt = fdtype
        H = self.arr(shape, dt, spd=True)
        scale = self.arr((B, k), dt) * 0 + 1
        skip = self.be.asarray(np.arange(B) < skipped)
        return best_of(lambda: self.be.ops.cholesky(H, (1e-15,), H.dtype, scale, skip),
                       cold=self.cold)

    def _triangular_solves(self, Lm, Rshape, Rdtype, transpose):
        (B, k, _), ldt, _ = Lm
        dt = ldt
        H = self.arr((B, k, k), dt, spd=True)
        scale = self.arr((B, k), dt) * 0 + 1
        skip = self.be.asarray(np.zeros(B, bool))
        L, _ = self.be.ops.cholesky(H, (1e-15,), H.dtype, scale, skip)
        R = self.arr(Rshape, Rdtype)
        return best_of(lambda: self.be.ops.solve_triangular(L, R, transpose), cold=self.cold)

    def _products(self, name, Mm, vshape):
        fn = getattr(_kkt, name)
        shape, dt, _ = Mm
        M, v = self.arr(shape, dt), self.arr(vshape, dt)
        if name in ("mtm",):
            return best_of(lambda: fn(self.xp, M, v), cold=self.cold)
        return best_of(lambda: fn(M, v), cold=self.cold)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="torch", choices=("torch", "numpy"))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--competitor-s", type=float, default=None,
                    help="the fastest competitor's forward + backward time (s), same session")
    args = ap.parse_args(argv)

    be = importlib.import_module(f"optnet.backends.{args.backend}")
    data = problems.make_problem(args.batch, args.n)
    arrays = [be.asarray(np.ascontiguousarray(data[k].astype(args.dtype))) for k in "QqGh"]

    def solve():
        return optnet.solve(*arrays)

    times = []
    solve()
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        sol = solve()
        times.append(time.perf_counter() - t0)
    fwd = float(np.median(times))
    iters = np.asarray(sol.iterations)

    rec, undo = Recorder(), []
    instrument(undo, rec, be)
    try:
        solve()                 # (warm: the patched functions are new objects)
        rec.time.clear()
        rec.calls.clear()
        t0 = time.perf_counter()
        solve()
        traced = time.perf_counter() - t0
    finally:
        for obj, name, old in reversed(undo):
            setattr(obj, name, old)

    # Each distinct call is replayed in two passes some seconds apart (the in-cache one,
    # then the cold one, then the in-cache one again) and keeps its best time: a burst
    # of load on a shared machine then spoils at most one pass.
    passes = [Replayer(be), Replayer(be, cold=True), Replayer(be), Replayer(be, cold=True)]
    timed = [{k: [rp.time(k, key) for key in rec.calls[k]] for k in KINDS} for rp in passes]
    alone = {k: sum(map(min, timed[0][k], timed[2][k])) for k in KINDS}
    cold = {k: sum(map(min, timed[1][k], timed[3][k])) for k in KINDS}
    in_solve = {k: rec.time[k] for k in KINDS}
    rest = traced - sum(in_solve.values())
    floor, floor_cold = sum(alone.values()), sum(cold.values())
    chol_batch = min(rp.time("Cholesky", ((args.batch, args.n, args.n), args.dtype, 0))
                     for rp in (passes[0], passes[2]))
    loop_iters = int(iters.max())

    print(f"optnet {args.backend}, batch {args.batch}, n = p = {args.n}, {args.dtype}: "
          f"forward {fwd:.3f} s (median of {args.repeats}; instrumented run {traced:.3f} s); "
          f"iterations median {int(np.median(iters))} / max {loop_iters}\n")
    print("| primitive | calls | in the solve (s) | alone, in cache (s) | alone, cold cache (s) "
          "| in the solve / alone cold |")
    print("|---|---|---|---|---|---|")
    for k in KINDS:
        a, c, s = alone[k], cold[k], in_solve[k]
        ratio = f"{s / c:.2f}" if c > 0 else "-"
        print(f"| {k} | {len(rec.calls[k])} | {s:.4f} | {a:.4f} | {c:.4f} | {ratio} |")
    print(f"| the rest (elementwise, reductions, selections, Python) | - | {rest:.4f} | 0 | 0 "
          f"| - |")
    print(f"| **total** | | **{traced:.4f}** | **{floor:.4f}** | **{floor_cold:.4f}** | "
          f"{traced / floor_cold:.2f} |\n")
    print(f"- forward / floor of its own primitives: {fwd / floor:.2f}x in cache, "
          f"{fwd / floor_cold:.2f}x cold")
    print(f"- the issue's floor model, {loop_iters} iterations x one batched Cholesky "
          f"({chol_batch * 1e3:.2f} ms): {loop_iters * chol_batch:.3f} s; forward / that: "
          f"{fwd / (loop_iters * chol_batch):.1f}x")
    if args.competitor_s:
        target = args.competitor_s / 7
        print(f"- 7x under the fastest competitor ({args.competitor_s:.3f} s forward + "
              f"backward): {target:.3f} s = {target / floor:.2f}x the in-cache floor of the "
              f"forward pass alone, {target / floor_cold:.2f}x the cold one")


if __name__ == "__main__":
    main()
