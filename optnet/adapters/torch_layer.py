"""``OptNetLayer``: the paper's QP layer as a ``torch.nn.Module``."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .torch_autograd import solve


class OptNetLayer(nn.Module):
    """A batch of inputs ``(*batch, in_features)`` to QP solutions ``(*batch, n)``.

    The QP's parameters are learned with the paper's always-feasible
    parameterization (Amos & Kolter 2017, section 3)::

        minimize_z  1/2 z'Qz + q'z   s.t.  Az = b,  Gz <= h
        Q = L L' + eps I,   b = A z0,   h = G z0 + s0,   s0 = softplus(r) > 0

    with learnable lower-triangular ``L``, ``G``, ``A``, ``z0`` and ``r``: ``z0``
    is strictly feasible for every value of the parameters, so every problem
    stays SOLVED during training. The input enters the linear term: by default
    through a learnable affine map ``q = W input + c`` (``input_affine=True``),
    or as the paper's plain ``q = input`` (``input_affine=False``, which needs
    ``in_features == n``).

    Parameters
    ----------
    n : int
        Number of QP variables (the output size).
    n_ineq : int
        Number of inequality rows ``p`` (0 for none).
    n_eq : int
        Number of equality rows ``m`` (< n).
    in_features : int, optional
        Input size (default ``n``).
    input_affine : bool
        Affine input map (default) or ``q = input``.
    eps : float
        The ``eps I`` that keeps ``Q`` positive definite.
    dtype, device : optional
        Of the parameters (default float64: QP layers are most reliable in it).
    tol, max_iter : optional
        Passed to the solver.
    compiled : bool or {"jax", "torch"}
        As in :func:`optnet.torch.solve`: ``"jax"`` compiled JAX programs (faster for
        small layers, CPU only, needs JAX), ``"torch"`` the iteration compiled by
        ``torch.compile`` (any device), ``True`` the first on CPU, else the second.

    Examples
    --------
    >>> import torch, optnet
    >>> layer = optnet.torch.OptNetLayer(n=4, n_ineq=6, n_eq=1)
    >>> z = layer(torch.randn(8, 4, dtype=torch.float64))
    >>> z.shape
    torch.Size([8, 4])
    """

    def __init__(self, n, n_ineq, n_eq=0, *, in_features=None, input_affine=True, eps=1e-4,
                 dtype=torch.float64, device=None, tol=None, max_iter=None,
                 compiled=False):
        super().__init__()
        in_features = n if in_features is None else in_features
        if n < 1 or n_ineq < 0 or not 0 <= n_eq < n:
            raise ValueError(f"need n >= 1, n_ineq >= 0 and 0 <= n_eq < n; received n={n}, "
                             f"n_ineq={n_ineq}, n_eq={n_eq}.")
        if not input_affine and in_features != n:
            raise ValueError(f"input_affine=False needs in_features == n; received "
                             f"in_features={in_features}, n={n}.")
        kw = {"dtype": dtype, "device": device}
        self.n, self.n_ineq, self.n_eq, self.eps = n, n_ineq, n_eq, eps
        self.tol, self.max_iter, self.compiled = tol, max_iter, compiled
        self.L = nn.Parameter(torch.eye(n, **kw))
        self.G = nn.Parameter(torch.randn(n_ineq, n, **kw) / n ** 0.5)
        self.A = nn.Parameter(torch.randn(n_eq, n, **kw) / n ** 0.5) if n_eq else None
        self.z0 = nn.Parameter(torch.zeros(n, **kw))
        self.r = nn.Parameter(torch.zeros(n_ineq, **kw))
        self.input_map = nn.Linear(in_features, n, **kw) if input_affine else None

    def qp_parameters(self):
        """The current ``(Q, G, h, A, b)`` (``A``/``b`` None without equalities)."""
        L = torch.tril(self.L)
        Q = L @ L.mT + self.eps * torch.eye(self.n, dtype=L.dtype, device=L.device)
        h = self.G @ self.z0 + F.softplus(self.r)
        A = b = None
        if self.A is not None:
            A, b = self.A, self.A @ self.z0
        return Q, self.G if self.n_ineq else None, h if self.n_ineq else None, A, b

    def forward(self, inputs, init=None):
        """Solve the layer's QP for ``inputs`` (*batch, in_features) -> (*batch, n).

        ``init``: a warm start, as in :func:`optnet.solve` (a mapping with ``"x"`` (*batch,
        n) and optionally ``"z"``, ``"y"``, e.g. from an earlier call's solution).
        """
        q = self.input_map(inputs) if self.input_map is not None else inputs
        Q, G, h, A, b = self.qp_parameters()
        return solve(Q, q, G, h, A, b, tol=self.tol, max_iter=self.max_iter, init=init,
                     compiled=self.compiled)
