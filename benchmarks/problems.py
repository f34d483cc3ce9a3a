"""The OptNet paper's benchmark QP (Amos & Kolter, ICML 2017, footnote 4).

Per batch lane::

    minimize_x  1/2 x'Qx + q'x   subject to   Gx <= h

with ``Q = U'U + 1e-3 I`` (``U`` uniform on [0, 1], n x n), ``G`` standard
normal (p x n), ``h = G z0 + s0`` (``z0`` standard normal, ``s0`` uniform on
[0, 1], so ``z0`` is strictly feasible) and ``q`` standard normal. No
equality constraints.

The generator is NumPy only and always returns float64 arrays; each runner
converts to its own framework and dtype.
"""

from __future__ import annotations

import numpy as np


def make_problem(batch: int, n: int, p: int | None = None, *, seed: int = 0) -> dict:
    """Return ``{"Q", "q", "G", "h"}`` of shapes (B,n,n), (B,n), (B,p,n), (B,p), float64.

    Deterministic for a given ``(batch, n, p, seed)``.
    """
    p = n if p is None else p
    rng = np.random.default_rng([seed, batch, n, p])
    U = rng.uniform(0.0, 1.0, size=(batch, n, n))
    Q = np.swapaxes(U, -1, -2) @ U + 1e-3 * np.eye(n)
    Q = 0.5 * (Q + np.swapaxes(Q, -1, -2))  # exactly symmetric
    G = rng.standard_normal(size=(batch, p, n))
    z0 = rng.standard_normal(size=(batch, n))
    s0 = rng.uniform(0.0, 1.0, size=(batch, p))
    h = np.einsum("bpn,bn->bp", G, z0) + s0
    q = rng.standard_normal(size=(batch, n))
    return {"Q": Q, "q": q, "G": G, "h": h}


if __name__ == "__main__":  # pragma: no cover - tiny self-check
    P = make_problem(4, 10)
    for k, v in P.items():
        print(k, v.shape, v.dtype)
    print("min eig Q:", np.linalg.eigvalsh(P["Q"]).min())
