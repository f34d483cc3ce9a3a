"""Determinism: the same input gives bit-identical output, run after run.

On the CPU, for the NumPy, torch and JAX backends, two solves of the same data
(fresh copies of the arrays each time) must agree bit for bit in every field of
the result (``tobytes`` equality: NaN payloads and signed zeros included), also
for batches whose lanes finish at different iterations (eager backends then
iterate a shrinking subset of the lanes) and batches with infeasible and
non-finite lanes. For NumPy the same holds across fresh interpreter processes
(with different hash seeds).
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import n_examples, to_numpy
from hypothesis import given, settings
from strategies import ARGS, paper_problem, qp_specs

import optnet
from optnet import Status

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

# The torch solves here test the torch iteration itself (see conftest.torch_native).
pytestmark = pytest.mark.usefixtures("torch_native")

ROOT = Path(__file__).resolve().parent.parent
FIELDS = ("x", "z", "y", "s", "status", "iterations", "primal_residual", "dual_residual", "gap")


def uneven_batch(seed: int, dtype: str = "float64", batch: int = 8, n: int = 20) -> dict:
    """Random feasible problems of the OptNet paper (lanes finish at different
    iterations), with lane 3 primal infeasible (0'x <= h < 0) and lane 5 NaN."""
    rng = np.random.default_rng(seed)
    data = paper_problem(rng, batch, n=n, p=n)
    data["G"][3] = 0.0
    data["h"][3] = -np.abs(data["h"][3]) - 1.0
    data["Q"][5, 0, 0] = np.nan
    return {k: None if a is None else a.astype(dtype) for k, a in data.items()}


def convert(a, backend: str):
    if a is None:
        return None
    a = np.array(a, copy=True)
    if backend == "torch":
        return torch.tensor(a)
    if backend == "jax":
        return jnp.array(a)
    return a


def run(data: dict, backend: str, **kw) -> dict:
    """Solve fresh copies of ``data`` with ``backend``; every field as a NumPy copy."""
    sol = optnet.solve(*(convert(data[k], backend) for k in ARGS), backend=backend, **kw)
    return {f: np.array(to_numpy(getattr(sol, f)), copy=True) for f in FIELDS}


def assert_bit_identical(a: dict, b: dict, what: str = "") -> None:
    for f in FIELDS:
        assert a[f].dtype == b[f].dtype and a[f].shape == b[f].shape, (what, f)
        assert np.array_equal(a[f], b[f], equal_nan=True), (what, f, a[f], b[f])
        assert a[f].tobytes() == b[f].tobytes(), (what, f, "differ in bits")


def test_bit_identical_helper_is_not_vacuous():
    a = {f: np.zeros(2) for f in FIELDS}
    assert_bit_identical(a, {f: v.copy() for f, v in a.items()})
    with pytest.raises(AssertionError):
        assert_bit_identical(a, dict(a, gap=np.array([0.0, -0.0])))
    with pytest.raises(AssertionError):
        assert_bit_identical(a, dict(a, x=np.array([0.0, np.nextafter(0.0, 1.0)])))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_uneven_batch_two_runs(backend, dtype):
    """Lanes finishing at different iterations (and failing lanes): two runs agree bit
    for bit."""
    data = uneven_batch(0, dtype)
    first = run(data, backend)
    assert len(set(first["iterations"].tolist())) > 2, first["iterations"]
    assert first["status"][3] == int(Status.PRIMAL_INFEASIBLE), first["status"]
    assert first["status"][5] == int(Status.NUMERICAL_ERROR), first["status"]
    assert np.sum(first["status"] == int(Status.SOLVED)) >= 5, first["status"]
    assert_bit_identical(first, run(data, backend), f"{backend} {dtype}")


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_max_iter_two_runs(backend):
    """Stopped by the iteration limit (MAX_ITER lanes, best iterates): bit-identical."""
    data = uneven_batch(1)
    first = run(data, backend, max_iter=3)
    assert np.any(first["status"] == int(Status.MAX_ITER)), first["status"]
    assert_bit_identical(first, run(data, backend, max_iter=3), backend)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@settings(max_examples=n_examples(15))
@given(spec=qp_specs(dtypes=("float64", "float32"), inf_rows=False))
def test_fuzz_two_runs(backend, spec):
    """Random feasible batches (any kind, sharing pattern, dtype): bit-identical."""
    data = spec.build()
    assert_bit_identical(run(data, backend), run(data, backend), backend)


def test_different_data_are_detected():
    """The comparison is not vacuous: different data give different bits."""
    a, b = run(uneven_batch(0), "numpy"), run(uneven_batch(1), "numpy")
    with pytest.raises(AssertionError):
        assert_bit_identical(a, b)


# JAX: one jit-compiled function (a fixed shape), called twice on fresh copies.
_JIT = {}


def run_jax_jit(data: dict) -> dict:
    if "f" not in _JIT:
        _JIT["f"] = jax.jit(lambda *a: tuple(optnet.solve(*a, backend="jax"))[:9])
    res = _JIT["f"](*(convert(data[k], "jax") for k in ARGS))
    return {f: np.array(v, copy=True) for f, v in zip(FIELDS, res)}


def test_jax_jit_two_runs():
    """JAX under jit (the whole batch in lockstep): bit-identical."""
    data = uneven_batch(0, batch=6, n=8)
    first = run_jax_jit(data)
    assert first["status"][3] == int(Status.PRIMAL_INFEASIBLE), first["status"]
    assert first["status"][5] == int(Status.NUMERICAL_ERROR), first["status"]
    assert len(set(first["iterations"].tolist())) > 2, first["iterations"]
    assert_bit_identical(first, run_jax_jit(data), "jax jit")


@pytest.mark.slow
def test_jax_eager_two_runs():
    """JAX outside jit (every loop compiles: slow): bit-identical."""
    data = uneven_batch(0, batch=6, n=8)
    first = run(data, "jax")
    assert len(set(first["iterations"].tolist())) > 2, first["iterations"]
    assert_bit_identical(first, run(data, "jax"), "jax eager")


SCRIPT = """
import sys
import numpy as np
sys.path[:0] = [{root!r}, {tests!r}]
import optnet
from strategies import ARGS, QPSpec, paper_problem

FIELDS = {fields!r}
{uneven_batch}
seed, out = int(sys.argv[1]), sys.argv[2]
result = {{}}
problems = {{
    "uneven": uneven_batch(seed),
    "uneven32": uneven_batch(seed, "float32"),
    "spec": QPSpec(n=6, kind="psd", rank=3, p_rand=5, m=2, seed=seed,
                   shapes=(("q", (4,)), ("h", (4,)))).build(),
}}
for name, data in problems.items():
    sol = optnet.solve(*(data[k] for k in ARGS))
    for f in FIELDS:
        result[name + "." + f] = np.asarray(getattr(sol, f))
np.savez(out, **result)
"""


def _run_script(tmp_path: Path, seed: int, hash_seed: str, name: str) -> dict:
    script = tmp_path / "solve_once.py"
    script.write_text(SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests"), fields=FIELDS,
                                    uneven_batch=inspect.getsource(uneven_batch)))
    out = tmp_path / f"{name}.npz"
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    proc = subprocess.run([sys.executable, str(script), str(seed), str(out)], cwd=str(tmp_path),
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with np.load(out) as z:
        return {k: z[k] for k in z.files}


def test_numpy_fresh_processes(tmp_path):
    """The same seed in two fresh interpreters (different hash seeds): the saved
    results agree bit for bit; another seed gives other results."""
    a = _run_script(tmp_path, 7, "0", "a")
    b = _run_script(tmp_path, 7, "12345", "b")
    c = _run_script(tmp_path, 8, "0", "c")
    assert sorted(a) == sorted(b) and len(a) == 3 * len(FIELDS)
    assert len(set(a["uneven.iterations"].tolist())) > 2, a["uneven.iterations"]
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k
    assert not np.array_equal(a["uneven.x"], c["uneven.x"], equal_nan=True)
    # And the same as in this process.
    here = run(uneven_batch(7), "numpy")
    for f in FIELDS:
        assert here[f].tobytes() == a["uneven." + f].tobytes(), f
