"""Structural errors, dtype handling and the array types of the results.

Every structural error must raise ``ValueError`` whose message names the
offending argument (as a word, e.g. ``q`` and not only ``Q``).
"""

from __future__ import annotations

import re

import array_api_strict
import numpy as np
import pytest
from conftest import to_numpy
from strategies import ARGS, feasible_lane

import optnet
from optnet import Status

N, P, M = 3, 4, 1


def base() -> dict:
    """A small feasible problem (float64 NumPy arrays)."""
    return feasible_lane(np.random.default_rng(0), N, P, M)


def word(name: str) -> str:
    """Regex matching ``name`` as a whole word."""
    return rf"(?<![A-Za-z_]){name}(?![A-Za-z_])"


def call(data: dict, **kw):
    return optnet.solve(*(data[k] for k in ARGS), **kw)


def is_strict(a) -> bool:
    return type(a).__module__.startswith("array_api_strict")


# ---------------------------------------------------------------- shapes

SHAPE_CASES = {
    "q_wrong_n": ("q", {"q": np.ones(N + 1)}),
    "G_wrong_n": ("G", {"G": np.ones((P, N + 1))}),
    "h_wrong_p": ("h", {"h": np.ones(P + 1)}),
    "A_wrong_n": ("A", {"A": np.ones((M, N + 1))}),
    "b_wrong_m": ("b", {"b": np.ones(M + 1)}),
    "Q_not_square": ("Q", {"Q": np.ones((N, N + 1))}),
    "Q_vector": ("Q", {"Q": np.ones(N)}),
    "q_scalar": ("q", {"q": np.float64(1.0)}),
    "G_vector": ("G", {"G": np.ones(N)}),
    "h_scalar": ("h", {"h": np.float64(1.0)}),
    "A_vector": ("A", {"A": np.ones(N)}),
    "b_scalar": ("b", {"b": np.float64(1.0)}),
    "n_zero": ("Q", {"Q": np.ones((0, 0)), "q": np.ones(0), "G": np.ones((P, 0)),
                     "A": np.ones((M, 0))}),
}


@pytest.mark.parametrize("case", sorted(SHAPE_CASES))
def test_shape_errors(backend, case):
    name, change = SHAPE_CASES[case]
    with pytest.raises(ValueError, match=word(name)):
        call(dict(base(), **change), backend=backend)


PAIR_CASES = [("G", "h"), ("h", "G"), ("A", "b"), ("b", "A")]


@pytest.mark.parametrize(("given", "missing"), PAIR_CASES)
def test_unpaired_arguments(backend, given, missing):
    """G without h (and the other three): the message names both."""
    data = dict(base(), **{missing: None})
    with pytest.raises(ValueError, match=word(given)) as info:
        call(data, backend=backend)
    assert re.search(word(missing), str(info.value)), str(info.value)


BROADCAST_CASES = {
    "Q_q": {"Q": (2,), "q": (3,)},
    "G_h": {"G": (2,), "h": (3,)},
    "A_b": {"A": (4,), "b": (2,)},
    "q_b_2d": {"q": (2, 3), "b": (3, 2)},
}


@pytest.mark.parametrize("case", sorted(BROADCAST_CASES))
def test_batch_dims_do_not_broadcast(backend, case):
    data = base()
    for k, bs in BROADCAST_CASES[case].items():
        data[k] = np.broadcast_to(data[k], bs + data[k].shape).copy()
    with pytest.raises(ValueError) as info:
        call(data, backend=backend)
    for k in BROADCAST_CASES[case]:
        assert re.search(word(k), str(info.value)), (k, str(info.value))


def test_zero_row_blocks_are_absent_blocks(backend):
    """G with 0 rows (and A with 0 rows) behave like None: z, s, y have 0 columns."""
    data = dict(base(), G=np.ones((2, 0, N)), h=np.ones((2, 0)), A=np.ones((0, N)),
                b=np.ones(0))
    sol = call(data, backend=backend)
    assert to_numpy(sol.x).shape == (2, N)
    assert to_numpy(sol.z).shape == (2, 0)
    assert to_numpy(sol.s).shape == (2, 0)
    assert to_numpy(sol.y).shape == (2, 0)
    expected = -np.linalg.solve(data["Q"], data["q"])
    np.testing.assert_allclose(to_numpy(sol.x), np.broadcast_to(expected, (2, N)), rtol=1e-10)


def test_absent_blocks_have_empty_outputs(backend):
    data = base()
    Q = np.broadcast_to(data["Q"], (2, 3, N, N))
    sol = optnet.solve(Q, data["q"], backend=backend)
    assert to_numpy(sol.x).shape == (2, 3, N)
    assert to_numpy(sol.z).shape == (2, 3, 0)
    assert to_numpy(sol.s).shape == (2, 3, 0)
    assert to_numpy(sol.y).shape == (2, 3, 0)
    for f in ("status", "iterations", "primal_residual", "dual_residual", "gap"):
        assert to_numpy(getattr(sol, f)).shape == (2, 3), f


# ---------------------------------------------------------------- libraries and backends


@pytest.mark.parametrize("arg", ARGS)
def test_mixed_libraries(arg):
    """One array-api-strict argument among NumPy ones, backend=None: error names it."""
    data = base()
    data[arg] = array_api_strict.asarray(data[arg])
    with pytest.raises(ValueError, match=word(arg)):
        call(data)


def test_mixed_libraries_converted_with_backend():
    """Naming a backend converts mixed inputs instead of raising."""
    data = base()
    data["q"] = array_api_strict.asarray(data["q"])
    sol = call(data, backend="numpy")
    assert isinstance(sol.x, np.ndarray)
    np.testing.assert_array_equal(sol.x, call(base()).x)


def test_unknown_backend():
    with pytest.raises(ValueError, match=word("backend")):
        call(base(), backend="not-a-library")


FIELDS = ("x", "z", "y", "s", "status", "iterations", "primal_residual", "dual_residual", "gap")


def test_backend_output_types(backend):
    """NumPy inputs with a named backend: results are arrays of that library."""
    sol = call(base(), backend=backend)
    for f in FIELDS:
        a = getattr(sol, f)
        if backend == "numpy":
            assert isinstance(a, np.ndarray), (f, type(a))
        else:
            assert is_strict(a), (f, type(a))
    assert int(to_numpy(sol.status)) == Status.SOLVED


def test_strict_inputs_inferred():
    """array-api-strict inputs, backend=None: array-api-strict results, same values."""
    data = base()
    strict = {k: array_api_strict.asarray(a) for k, a in data.items()}
    sol = call(strict)
    for f in FIELDS:
        assert is_strict(getattr(sol, f)), f
    ref = call(data)
    for f in ("x", "y", "z", "s"):
        np.testing.assert_allclose(to_numpy(getattr(sol, f)), getattr(ref, f),
                                   rtol=1e-10, atol=1e-12)


def test_strict_inputs_to_numpy_backend():
    """backend="numpy" converts array-api-strict inputs: NumPy results, same values."""
    data = base()
    strict = {k: array_api_strict.asarray(a) for k, a in data.items()}
    sol = call(strict, backend="numpy")
    for f in FIELDS:
        assert isinstance(getattr(sol, f), np.ndarray), f
    np.testing.assert_array_equal(sol.x, call(data).x)


# ---------------------------------------------------------------- dtypes

BAD_DTYPES = ["bool", "complex128", "complex64", "float16"]


@pytest.mark.parametrize("dtype", BAD_DTYPES)
@pytest.mark.parametrize("arg", ARGS)
def test_bad_dtype_numpy(arg, dtype):
    data = base()
    data[arg] = data[arg].astype(dtype)
    with pytest.raises(ValueError, match=word(arg)):
        call(data)


@pytest.mark.parametrize("dtype", ["bool", "complex128"])
@pytest.mark.parametrize("arg", ["Q", "h"])
def test_bad_dtype_strict(arg, dtype):
    data = {k: array_api_strict.asarray(a) for k, a in base().items()}
    data[arg] = array_api_strict.astype(data[arg], getattr(array_api_strict, dtype))
    with pytest.raises(ValueError, match=word(arg)):
        call(data)


@pytest.mark.parametrize("tol", [0.0, -1e-6, float("nan")])
def test_bad_tol(backend, tol):
    with pytest.raises(ValueError, match=word("tol")):
        call(base(), backend=backend, tol=tol)


@pytest.mark.parametrize("max_iter", [0, -1])
def test_bad_max_iter(backend, max_iter):
    with pytest.raises(ValueError, match=word("max_iter")):
        call(base(), backend=backend, max_iter=max_iter)


def _integer_problem() -> dict:
    """An integer-valued problem: min x'x - (2, 4, 6)'x s.t. x <= (2, 5, 5), x1 + x2 + x3 = 6."""
    return {"Q": 2 * np.eye(3, dtype=np.int64), "q": np.array([-2, -4, -6]),
            "G": np.eye(3, dtype=np.int64), "h": np.array([2, 5, 5]),
            "A": np.ones((1, 3), dtype=np.int64), "b": np.array([6])}


def test_integer_inputs_promoted_to_float64(backend):
    data = _integer_problem()
    sol = call(data, backend=backend)
    x = to_numpy(sol.x)
    assert x.dtype == np.float64
    # The unconstrained optimum (1, 2, 3) is feasible: x = (1, 2, 3), z = 0, y = 0.
    np.testing.assert_allclose(x, [1.0, 2.0, 3.0], rtol=0, atol=1e-9)
    ref = call({k: a.astype(np.float64) for k, a in data.items()}, backend=backend)
    np.testing.assert_allclose(x, to_numpy(ref.x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("int_arg", ARGS)
def test_integer_with_float32_gives_float32(int_arg):
    data = {k: a.astype(np.float32) for k, a in _integer_problem().items()}
    data[int_arg] = _integer_problem()[int_arg]
    sol = call(data)
    for f in ("x", "z", "y", "s", "primal_residual", "dual_residual", "gap"):
        assert getattr(sol, f).dtype == np.float32, f
    np.testing.assert_allclose(sol.x, [1.0, 2.0, 3.0], rtol=0, atol=1e-4)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_output_dtype(backend, dtype):
    data = {k: a.astype(dtype) for k, a in base().items()}
    sol = call(data, backend=backend)
    for f in ("x", "z", "y", "s", "primal_residual", "dual_residual", "gap"):
        assert to_numpy(getattr(sol, f)).dtype == np.dtype(dtype), f
    assert to_numpy(sol.status).dtype == np.int32
    assert np.issubdtype(to_numpy(sol.iterations).dtype, np.integer)


@pytest.mark.parametrize("f64_arg", ARGS)
def test_mixed_float_dtypes_give_float64(f64_arg):
    data = {k: a.astype(np.float32) for k, a in base().items()}
    data[f64_arg] = base()[f64_arg]
    sol = call(data)
    for f in ("x", "z", "y", "s"):
        assert getattr(sol, f).dtype == np.float64, f


def test_status_enum():
    assert [(s.name, int(s)) for s in Status] == [
        ("SOLVED", 0), ("MAX_ITER", 1), ("PRIMAL_INFEASIBLE", 2), ("DUAL_INFEASIBLE", 3),
        ("NUMERICAL_ERROR", 4), ("NONCONVEX", 5)]
    assert issubclass(optnet.QPError, Exception)
    assert optnet.QPSolution._fields[:9] == FIELDS
