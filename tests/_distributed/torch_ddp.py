"""Train an ``OptNetLayer`` under ``DistributedDataParallel`` (gloo, 2 CPU processes).

Run as ``python torch_ddp.py OUTDIR`` (launched by ``tests/test_torch.py``).
The same layer (fixed seed) is trained for ``STEPS`` SGD steps on a fixed
dataset of ``BATCH`` samples with the mean squared error:

* in this process, on the full batch (the single-process reference);
* in ``WORLD`` processes under DDP, rank ``r`` on the ``r``-th of ``WORLD``
  disjoint, equally sized slices of the batch. DDP averages the gradients over
  the ranks, which equals the full-batch gradient of the mean loss.

Writes ``OUTDIR/reference.pt`` and ``OUTDIR/rank{r}.pt``, each a dict with

    grads        per step, ``{parameter name: gradient}`` used by the step
    params       ``{parameter name: value}`` after the last step
    all_solved   every lane of every forward pass was SOLVED

and, in the rank files only, ``local_grads``: per step, the gradient of the
rank's own slice before averaging (it must differ from the averaged one, else
the comparison could not detect missing averaging).
"""

from __future__ import annotations

import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

import optnet

WORLD = 2
BATCH = 8
STEPS = 3
LR = 0.1
SOLVED = int(optnet.Status.SOLVED)


def build():
    """The layer (float64, n=4, 6 inequalities, 1 equality) and the dataset ``(x, y)``."""
    torch.manual_seed(0)
    layer = optnet.torch.OptNetLayer(n=4, n_ineq=6, n_eq=1, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    # Large inputs: some inequalities are active, so G, z0 and r get gradients.
    x = 3.0 * torch.randn(BATCH, 4, dtype=torch.float64, generator=gen)
    y = torch.randn(BATCH, 4, dtype=torch.float64, generator=gen)
    return layer, x, y


def solved(layer, x):
    """Whether every lane of the layer's QPs for inputs ``x`` is SOLVED."""
    with torch.no_grad():
        _, status = optnet.torch.solve(*_qp(layer, x), tol=layer.tol, max_iter=layer.max_iter,
                                       status=True)
    return bool(torch.all(status == SOLVED))


def _qp(layer, x):
    """The six QP inputs ``(Q, q, G, h, A, b)`` of the layer's forward pass."""
    Q, G, h, A, b = layer.qp_parameters()
    return Q, layer.input_map(x), G, h, A, b


def _grads(module):
    return {k: p.grad.detach().clone() for k, p in module.named_parameters()}


def _params(module):
    return {k: p.detach().clone() for k, p in module.named_parameters()}


def _local_grads(layer, x, y):
    """The gradient of the mean loss on ``(x, y)`` alone, for ``layer``'s current values."""
    params = dict(layer.named_parameters())
    loss = torch.func.functional_call(layer, params, (x,)).sub(y).pow(2).mean()
    return dict(zip(params, torch.autograd.grad(loss, list(params.values()))))


def train_single():
    """The reference: ``STEPS`` SGD steps on the full batch in one process."""
    layer, x, y = build()
    opt = torch.optim.SGD(layer.parameters(), lr=LR)
    grads, ok = [], True
    for _ in range(STEPS):
        ok &= solved(layer, x)
        opt.zero_grad()
        ((layer(x) - y) ** 2).mean().backward()
        grads.append(_grads(layer))
        opt.step()
    ok &= solved(layer, x)
    return {"grads": grads, "params": _params(layer), "all_solved": ok}


def train_ddp(rank, world, port, outdir):
    """One DDP rank: ``STEPS`` SGD steps on its slice of the batch; saves ``rank{rank}.pt``."""
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        layer, x, y = build()
        per = BATCH // world
        x, y = x[rank * per:(rank + 1) * per], y[rank * per:(rank + 1) * per]
        model = DistributedDataParallel(layer)
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        grads, local, ok = [], [], True
        for _ in range(STEPS):
            ok &= solved(layer, x)
            local.append(_local_grads(layer, x, y))
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            grads.append(_grads(layer))
            opt.step()
        ok &= solved(layer, x)
        torch.save({"grads": grads, "local_grads": local, "params": _params(layer),
                    "all_solved": ok}, os.path.join(outdir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port():
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(outdir):
    torch.set_num_threads(1)
    torch.save(train_single(), os.path.join(outdir, "reference.pt"))
    mp.spawn(train_ddp, args=(WORLD, free_port(), outdir), nprocs=WORLD, join=True)


if __name__ == "__main__":
    main(sys.argv[1])
