"""optnet on a GPU against qpth on the same GPU: forward + backward times, agreement, counts.

On the OptNet paper's random QP (``problems.py``, float64, n = p = 100 by default) at
batch 128 and 4096, each solver's forward pass and backward of ``sum(x)`` with respect to
``Q, q, G, h``, timed with the device synchronised after each call (best and median of
``--repeats`` after one warm-up call, which is reported apart: it includes compilation
for the compiled paths):

- ``qpth`` (``QPFunction``, its defaults) on CUDA tensors: the reference of the issue's
  target (optnet at least 10x faster);
- ``optnet-torch``: ``optnet.torch.solve`` on CUDA tensors (the eager iteration);
- ``optnet-torch-step``: the same with the iteration compiled by ``torch.compile``
  (``compiled="torch"``, with ``--compiled``: its first call compiles for minutes);
- ``optnet-jax``: ``jax.jit(jax.grad(...))`` of ``optnet.jax.solve`` on JAX's GPU;
- ``optnet-cupy``: ``optnet.solve`` + ``optnet.vjp`` on CuPy arrays.

Every solver's ``x`` is compared with optnet's NumPy solution of the first lanes (the
largest difference relative to the size of ``x``), and each row says how many lanes were
SOLVED. The kernels and host reads of one torch CUDA solve at batch 1, n = p = 10 are
counted as ``counts.py`` counts them on the CPU (the target: at most 12 host reads).

The device is named in the output; the times are comparable only within one run. With
``--device cpu`` the script runs the same code on the CPU (JAX's and CuPy's rows are
skipped): a check of the script itself, not a measurement.

Run: ``python benchmarks/gpu.py [--batches 128 4096] [--n 100] [--repeats 5] [--compiled]
[--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from problems import make_problem  # noqa: E402
from runners import time_call  # noqa: E402

import optnet  # noqa: E402

SOLVED = int(optnet.Status.SOLVED)
CHECK_LANES = 8


def _timed(fn, sync, repeats):
    """First call (s), best and median of ``repeats`` more (s), and the first call's result,
    the device synchronised after each call (``runners.time_call``)."""
    def call():
        out = fn()
        sync()
        return out

    res = time_call(call, repeats)
    return res["first"], res["best"], res["median"], res["result"]


def _qpth_without_cvxpy():
    """qpth imports cvxpy for its optional CVXPY solver; the default one (PDIPM_BATCHED,
    timed here) never uses it. Where cvxpy is not installed (a GPU machine without
    network), an empty module stands in for it."""
    import importlib.util
    import types

    if importlib.util.find_spec("cvxpy") is None:
        sys.modules.setdefault("cvxpy", types.ModuleType("cvxpy"))


def _torch_solvers(device, compiled):
    import torch

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def tensors(P):
        return [torch.tensor(P[k], device=device, requires_grad=True) for k in "QqGh"]

    def qpth(P):
        _qpth_without_cvxpy()
        from qpth.qp import QPFunction

        args = tensors(P)
        e = torch.empty(0, dtype=torch.float64, device=device)

        def run():
            x = QPFunction(verbose=-1)(*args, e, e)
            torch.autograd.grad(x.sum(), args)
            return x.detach().cpu().numpy(), None

        return run

    def optnet_torch(P, **kw):
        args = tensors(P)

        def run():
            x, st = optnet.torch.solve(*args, status=True, **kw)
            torch.autograd.grad(x.sum(), args)
            return x.detach().cpu().numpy(), st.cpu().numpy()

        return run

    out = {"qpth": qpth, "optnet-torch": optnet_torch}
    if compiled:
        out["optnet-torch-step"] = lambda P: optnet_torch(P, compiled="torch")
    return out, sync


def _jax_solver():
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    gpu = jax.devices("gpu")[0]

    def setup(P):
        args = [jax.device_put(jnp.asarray(P[k]), gpu) for k in "QqGh"]
        solve = jax.jit(lambda *a: optnet.jax.solve(*a, status=True))
        grad = jax.jit(jax.grad(lambda *a: optnet.jax.solve(*a).sum(), argnums=(0, 1, 2, 3)))

        def run():
            x, st = solve(*args)
            jax.block_until_ready(grad(*args))
            return np.asarray(x), np.asarray(st)

        return run

    return setup, lambda: None, str(gpu)


def _cupy_solver():
    import cupy

    def setup(P):
        args = [cupy.asarray(P[k]) for k in "QqGh"]

        def run():
            sol = optnet.solve(*args)
            optnet.vjp(sol, cupy.ones_like(sol.x))
            return cupy.asnumpy(sol.x), cupy.asnumpy(sol.status)

        return run

    return setup, cupy.cuda.Device().synchronize


def _host_counts(device):
    """Kernels and host reads of one torch solve + backward on ``device``, B = 1, n = 10."""
    from counts import count

    fwd, bwd, _, _ = count(10, 1, device=device)
    return {"kernels": fwd.kernels.total + bwd.kernels.total,
            "host reads": fwd.calls_mode.host + bwd.calls_mode.host}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[128, 4096])
    ap.add_argument("--n", type=int, default=100, help="variables = inequality rows")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda", help="torch device (cpu: a check of the script)")
    ap.add_argument("--compiled", action="store_true", help="also optnet-torch-step")
    ap.add_argument("--out", type=Path, default=None, help="also write results.json here")
    args = ap.parse_args(argv)

    import torch

    on_gpu = args.device.startswith("cuda")
    if on_gpu and not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py: torch sees no CUDA device (use --device cpu to check "
                 "the script on a CPU)")
    name = torch.cuda.get_device_name(args.device) if on_gpu else platform.processor() or "cpu"
    info = {"device": name, "torch": torch.__version__, "n": args.n, "rows": []}
    print(f"device: {name}; torch {torch.__version__}; n = p = {args.n}, float64, "
          f"forward + backward of sum(x), best / median of {args.repeats}")

    solvers, torch_sync = _torch_solvers(args.device, args.compiled)
    setups = {k: (v, torch_sync) for k, v in solvers.items()}
    if on_gpu:
        for key, make in (("optnet-jax", _jax_solver), ("optnet-cupy", _cupy_solver)):
            try:
                got = make()
            except Exception as exc:    # a framework without a GPU here: say so, go on
                print(f"{key}: skipped ({type(exc).__name__}: {exc})")
                continue
            setups[key] = got[:2]
            if key == "optnet-jax":
                info["jax device"] = got[2]

    print("| solver | batch | first call (s) | best (s) | median (s) | qpth / this | "
          "solved | max rel. diff. of x |")
    print("|---|---|---|---|---|---|---|---|")
    for B in args.batches:
        P = make_problem(B, args.n, seed=0)
        lanes = min(B, CHECK_LANES)
        ref = optnet.solve(*(P[k][:lanes] for k in "QqGh")).x
        qpth_best = None
        for key, (setup, sync) in setups.items():
            try:
                first, best, median, (x, status) = _timed(setup(P), sync, args.repeats)
            except Exception as exc:
                print(f"| {key} | {B} | error: {type(exc).__name__}: {str(exc)[:120]} |")
                continue
            if key == "qpth":
                qpth_best = best
            diff = float(np.max(np.abs(x[:lanes] - ref)) / max(1.0, np.max(np.abs(ref))))
            solved = "" if status is None else f"{int(np.sum(status == SOLVED))}/{B}"
            ratio = "" if qpth_best is None else f"{qpth_best / best:.2f}"
            print(f"| {key} | {B} | {first:.3f} | {best:.4f} | {median:.4f} | {ratio} | "
                  f"{solved} | {diff:.1e} |", flush=True)
            info["rows"].append({"solver": key, "batch": B, "first_s": first, "best_s": best,
                                 "median_s": median, "solved": solved, "max_rel_diff_x": diff})
    counts = _host_counts(args.device)
    info["counts"] = counts
    print(f"torch on {args.device}, B = 1, n = p = 10, forward + backward: "
          f"{counts['kernels']} kernels, {counts['host reads']} host reads")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
