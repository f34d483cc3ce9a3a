"""The batched products of ``_kkt`` (``mv``, ``mtv``, ``mm``, ``mtm``): a matrix shared by
the batch (leading dimension 1) gives the products of that matrix repeated for every lane,
on every array library (the shared case is one product of two matrices, the batched one a
product per lane)."""

from __future__ import annotations

import numpy as np
import pytest

from optnet._kkt import mm, mtm, mtv, mv

LIBRARIES = ("numpy", "array_api_strict", "torch", "jax")


def _library(name):
    if name == "numpy":
        return np, np.asarray
    if name == "array_api_strict":
        xs = pytest.importorskip("array_api_strict")
        return xs, xs.asarray
    if name == "torch":
        torch = pytest.importorskip("torch")
        return torch, torch.as_tensor
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax.numpy, jax.numpy.asarray


@pytest.mark.parametrize("name", LIBRARIES)
@pytest.mark.parametrize("B,r,c,k", [(150, 40, 64, 1), (7, 5, 3, 2), (1, 4, 6, 2), (3, 1, 1, 1)])
def test_shared_matrix_products_equal_the_repeated_matrix(name, B, r, c, k):
    xp, asarray = _library(name)
    rng = np.random.default_rng(B + r + c + k)
    M = rng.normal(size=(1, r, c))
    v, w = rng.normal(size=(B, c)), rng.normal(size=(B, r))
    R, S = rng.normal(size=(B, c, k)), rng.normal(size=(B, r, k))
    tiled = np.repeat(M, B, axis=0)
    want = (np.einsum("brc,bc->br", tiled, v), np.einsum("brc,br->bc", tiled, w),
            np.einsum("brc,bck->brk", tiled, R), np.einsum("brc,brk->bck", tiled, S))
    for Mx in (M, tiled):          # shared, and repeated for every lane
        got = (mv(asarray(Mx), asarray(v)), mtv(asarray(Mx), asarray(w)),
               mm(asarray(Mx), asarray(R)), mtm(xp, asarray(Mx), asarray(S)))
        for g, e in zip(got, want, strict=True):
            assert tuple(g.shape) == e.shape
            np.testing.assert_allclose(np.asarray(g), e, rtol=1e-12, atol=1e-12)


def test_shared_matrix_products_are_one_matrix_product():
    """With torch, the products with a shared matrix run as one product of two matrices
    (``mm``), not as a batch of products (``bmm``) over the broadcast matrix."""
    torch = pytest.importorskip("torch")
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    rng = np.random.default_rng(0)
    M, v, w, R, S = (torch.as_tensor(rng.normal(size=shape)) for shape in
                     [(1, 40, 64), (150, 64), (150, 40), (150, 64, 2), (150, 40, 1)])
    for call in (lambda: mv(M, v), lambda: mtv(M, w), lambda: mm(M, R), lambda: mtm(torch, M, S)):
        with Ops() as ops:
            call()
        assert "bmm" not in ops.names and "mm" in ops.names, ops.names
