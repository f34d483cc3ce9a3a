"""Total variation as a QP, and the denoising experiment's models (PyTorch).

Total variation denoising as a quadratic program
------------------------------------------------
Anisotropic 1-D total variation denoising of a noisy signal ``y`` (length n) is::

    minimize_z  1/2 ||y - z||^2 + lambda ||D z||_1                          (TV)

with ``D`` the (n-1, n) first-difference matrix, ``(D z)_i = z_{i+1} - z_i``.
The l1 norm is not smooth; the usual epigraph trick makes it a QP. Introduce
``t`` (n-1) with ``|D z| <= t`` elementwise, i.e. ``D z - t <= 0`` and
``-D z - t <= 0``. At the optimum every ``t_i = |(D z)_i|`` (a larger ``t_i``
only raises the objective when lambda > 0), so (TV) equals, after expanding
``1/2 ||y - z||^2 = 1/2 z'z - y'z + 1/2 y'y`` and dropping the constant::

    minimize_{x = (z, t)}  1/2 x' Q x + q' x   subject to   G x <= h

    Q = [[I_n, 0], [0, 0_{n-1}]]      q = [-y; lambda 1_{n-1}]
    G = [[ D, -I_{n-1}],              h = 0_{2(n-1)}
         [-D, -I_{n-1}]]

2n - 1 = 199 variables and 2(n - 1) = 198 inequalities for n = 100, the sizes
of the paper's layer (Amos & Kolter 2017, section 4.2). With lambda = 0 the
``t`` are free upward (a ray of solutions) but ``z = y`` is still unique.

The learned variants keep this structure and learn the matrix: since
``lambda ||D z||_1 = ||(lambda D) z||_1`` for lambda >= 0, one matrix
``M = lambda D`` carries both, and ``q = [-y; 1]``. Any ``M`` gives a feasible,
bounded QP (``z = 0, t = 1`` is strictly feasible; the objective is bounded
below because ``Q`` is positive definite in ``z`` and ``t >= 0``), so ``M`` is
learned without constraints.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..torch import OptNetLayer, solve


def difference_matrix(n, *, dtype=torch.float64, device=None):
    """The first-difference matrix ``D``, shape (n-1, n): ``(D z)_i = z_{i+1} - z_i``."""
    if int(n) != n or n < 2:
        raise ValueError(f"difference_matrix needs an integer n >= 2, received {n!r}")
    n = int(n)
    D = torch.zeros(n - 1, n, dtype=dtype, device=device)
    i = torch.arange(n - 1, device=device)
    D[i, i] = -1.0
    D[i, i + 1] = 1.0
    return D


def tv_qp(y, M):
    """The TV QP's ``(Q, q, G, h)`` for signals ``y`` and matrix ``M = lambda D``.

    Parameters
    ----------
    y : tensor, shape (B, n)
        Noisy signals.
    M : tensor, shape (r, n)
        The penalty matrix (``lambda`` times a difference operator, or learned);
        ``r`` auxiliary variables ``t``, one per row.

    Returns
    -------
    Q : (n + r, n + r)
    q : (B, n + r)
    G : (2r, n + r)
    h : (2r,)
        Shared ``Q``, ``G``, ``h`` (broadcast over the batch by the solver); see
        the module docstring for the derivation.
    """
    if y.ndim != 2 or M.ndim != 2 or M.shape[1] != y.shape[1]:
        raise ValueError(f"tv_qp needs y of shape (B, n) and M of shape (r, n); received "
                         f"y {tuple(y.shape)}, M {tuple(M.shape)}")
    (B, n), r = y.shape, M.shape[0]
    kw = {"dtype": y.dtype, "device": y.device}
    Q = torch.zeros(n + r, n + r, **kw)
    Q[:n, :n] = torch.eye(n, **kw)
    q = torch.cat([-y, torch.ones(B, r, **kw)], dim=1)
    eye = torch.eye(r, **kw)
    G = torch.cat([torch.cat([M, -eye], 1), torch.cat([-M, -eye], 1)], 0)
    h = torch.zeros(2 * r, **kw)
    return Q, q, G, h


def tv_denoise(y, lam, *, D=None, tol=None):
    """Total variation denoising of ``y`` with penalty ``lam``, by the batched QP solver.

    Parameters
    ----------
    y : tensor, shape (B, n), float64
    lam : float or tensor
        lambda >= 0.
    D : tensor, shape (r, n), optional
        Difference operator (default :func:`difference_matrix`).
    tol : float, optional
        Solver tolerance.

    Returns
    -------
    tensor, shape (B, n)
        The denoised signals ``z`` (differentiable in ``y``, ``lam`` and ``D``).
    """
    if not isinstance(lam, torch.Tensor) and not lam >= 0:
        raise ValueError(f"tv_denoise needs lambda >= 0, received {lam!r}")
    D = difference_matrix(y.shape[1], dtype=y.dtype, device=y.device) if D is None else D
    x = solve(*tv_qp(y, lam * D), tol=tol)
    return x[:, : y.shape[1]]


class TVDenoiser(nn.Module):
    """OptNet with the TV structure: ``z = argmin 1/2||y - z||^2 + ||M z||_1``, ``M`` learned.

    ``y`` is centred on its mean before the QP and the mean added back (exact
    for TV, where ``M 1 = 0``; it makes the learned ``M``'s gradients well scaled).

    Parameters
    ----------
    M : tensor, shape (r, n)
        Initial penalty matrix: a random matrix for the learned-D model (or
        ``lambda * difference_matrix(n)`` to start from TV).
    tol : float, optional
        Solver tolerance.
    """

    def __init__(self, M, *, tol=None):
        super().__init__()
        self.M = nn.Parameter(M.detach().clone())
        self.tol = tol

    def forward(self, y):
        """Denoise ``y`` (B, n) -> (B, n)."""
        # Each signal is denoised about its own mean. For any M with M 1 = 0 (TV) this
        # changes nothing: the problem is shift-equivariant. But the gradient of the loss
        # in M_i is an outer product with the solution z, whose entries are the
        # heights' level (about 55) rather than its variation; uncentred, that common
        # level dominates every row's gradient and the first steps add a constant to each
        # row (penalizing the mean level), which raises the MSE.
        mean = y.mean(dim=1, keepdim=True)
        x = solve(*tv_qp(y - mean, self.M), tol=self.tol)
        return x[:, : y.shape[1]] + mean


class OptNetDenoiser(nn.Module):
    """The paper's pure OptNet layer for denoising: a general learned QP.

    ``minimize_x 1/2 x'Qx + q'x  s.t.  Gx <= h`` with ``Q = L L' + eps I``,
    ``h = G z0 + s0`` learned (the always-feasible parameterization of
    :class:`optnet.torch.OptNetLayer`), ``n_vars`` variables and ``n_ineq``
    inequalities (199 and 198, the sizes of the TV QP, in the paper). The signal
    enters the linear term as in the TV QP, ``q = [-y; 0]``, and the output is
    the first ``n`` variables.

    Parameters
    ----------
    n : int
        Signal length.
    n_vars, n_ineq : int
        QP size (n_vars >= n).
    eps : float
        ``Q``'s ``eps I``.
    tol : float, optional
        Solver tolerance.
    """

    def __init__(self, n, n_vars, n_ineq, *, eps=1e-4, tol=None):
        super().__init__()
        if n_vars < n:
            raise ValueError(f"OptNetDenoiser needs n_vars >= n, received n_vars={n_vars}, "
                             f"n={n}")
        self.n = n
        self.layer = OptNetLayer(n_vars, n_ineq, input_affine=False, eps=eps, tol=tol)

    def forward(self, y):
        """Denoise ``y`` (B, n) -> (B, n)."""
        pad = y.new_zeros(y.shape[0], self.layer.n - self.n)
        return self.layer(torch.cat([-y, pad], dim=1))[:, : self.n]


class FCDenoiser(nn.Module):
    """Fully connected ReLU network ``n -> hidden -> hidden -> n`` (the FC baseline).

    The input is centred and scaled by fixed constants (the heights' mean 55
    and spread 30) so that the default initialization sees unit-scale inputs;
    the output is mapped back, and a skip connection makes the network learn
    the correction to the noisy signal.
    """

    def __init__(self, n, hidden=500, *, shift=55.0, scale=30.0):
        super().__init__()
        self.shift, self.scale = shift, scale
        self.net = nn.Sequential(nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, n)).double()

    def forward(self, y):
        """Denoise ``y`` (B, n) -> (B, n)."""
        u = (y - self.shift) / self.scale
        return y + self.scale * self.net(u)


def random_matrix(rows, cols, scale, *, generator=None, dtype=torch.float64):
    """Gaussian matrix with entries of standard deviation ``scale / sqrt(cols)``."""
    return torch.randn(rows, cols, generator=generator, dtype=dtype) * (scale / math.sqrt(cols))


class TunedTVDenoiser(nn.Module):
    """Tuned TV: the TV layer with a learned, shift-invariant linear map of its input.

    ``z = argmin 1/2 ||u - z||^2 + lambda ||D z||_1`` with ``u = c + k * c``
    (``c`` the signal centred on its mean, ``*`` a convolution with a learned
    symmetric kernel ``k`` of half-width ``width``, zero padded) and a learned
    ``lambda = lambda0 exp(s)``; the mean is added back. At ``k = 0, s = 0`` it is
    exactly TV with ``lambda0``, the start of the fine-tuning.

    The paper's tuned TV (Amos & Kolter 2017, section 4.2; ``denoising/models.py``
    of github.com/locuslab/optnet, option ``--tvInit``) fine-tunes the whole QP
    layer from the TV solution, its input map ``q = W y + b`` included (a dense
    199 x 100 ``W``). This model keeps that map but shares its weights across
    positions (a convolution), since the signals' distribution is shift
    invariant: 2 + ``width`` parameters instead of the dense map's 19,900 (the
    whole layer's are about 80,000), which a few thousand signals fit without
    overfitting and whose gradient is an average
    over all positions rather than one position's noise. ``u = c + k * c`` adds to
    the QP's linear term ``-k * c``; with ``k`` a (negative) second difference it
    is ``+ w D'(D c)``, which lowers the penalty of jumps of ``z`` in the
    direction of the observed ones: it counters TV's shrinkage of real jumps.

    Parameters
    ----------
    lam : float
        The TV penalty to start from (the sweep's best).
    n : int
        Signal length.
    width : int
        Kernel half-width (the kernel has ``2 width + 1`` taps).
    tol : float, optional
        Solver tolerance.
    """

    def __init__(self, lam, n, *, width=15, tol=None):
        super().__init__()
        if int(width) != width or width < 0:
            raise ValueError(f"TunedTVDenoiser needs an integer width >= 0, received {width!r}")
        if not lam > 0:
            raise ValueError(f"TunedTVDenoiser needs lambda > 0, received {lam!r}")
        self.lam0, self.width, self.tol = float(lam), int(width), tol
        self.half_kernel = nn.Parameter(torch.zeros(self.width + 1, dtype=torch.float64))
        self.log_scale = nn.Parameter(torch.zeros((), dtype=torch.float64))
        self.register_buffer("D", difference_matrix(n))

    @property
    def lam(self):
        """The current lambda."""
        return self.lam0 * torch.exp(self.log_scale)

    def kernel(self):
        """The symmetric kernel ``k``, ``2 width + 1`` taps."""
        h = self.half_kernel
        return torch.cat([h.flip(0)[:-1], h])

    def forward(self, y):
        """Denoise ``y`` (B, n) -> (B, n)."""
        mean = y.mean(dim=1, keepdim=True)
        c = y - mean
        k = self.kernel().to(c.dtype)
        u = c + torch.nn.functional.conv1d(c[:, None], k[None, None], padding=self.width)[:, 0]
        return tv_denoise(u, self.lam, D=self.D.to(c.dtype), tol=self.tol) + mean
