"""Solve a batch of 8 QPs sharded over 2 CPU devices; compare with the unsharded run.

Run with ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` (set by
``tests/test_jax.py``). Prints ``key=value`` lines:

    devices   number of JAX devices
    x_shards  number of devices the solution is split over
    x_err     max |x_sharded - x_unsharded| / max |x_unsharded|
    grad_err  the same over the six gradients (each relative to its own size)
    status    "all_solved" or the status array
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import optnet  # noqa: E402

NAMES = ("Q", "q", "G", "h", "A", "b")


def problem(batch=8, n=4, p=6, m=1, seed=0):
    """Q, G, A shared; q, h, b batched (feasible: h = G x0 + s0, b = A x0)."""
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(n, n))
    Q = M @ M.T + 0.1 * np.eye(n)
    G = rng.normal(size=(p, n))
    A = rng.normal(size=(m, n))
    x0 = rng.normal(size=(batch, n))
    s0 = rng.uniform(0.0, 1.0, size=(batch, p))
    return {"Q": Q, "q": rng.normal(size=(batch, n)), "G": G,
            "h": x0 @ G.T + s0, "A": A, "b": x0 @ A.T}


def run(*args):
    def loss(*a):
        x, z, y = optnet.jax.solve(*a, duals=True)
        return jnp.sum(x ** 2) + jnp.sum(z) + jnp.sum(y)

    x, status = optnet.jax.solve(*args, status=True)
    return x, status, jax.grad(loss, argnums=tuple(range(6)))(*args)


def main():
    devices = jax.devices()
    print(f"devices={len(devices)}")
    prob = problem()
    mesh = Mesh(np.array(devices), ("batch",))
    batched = NamedSharding(mesh, P("batch"))
    replicated = NamedSharding(mesh, P())
    sharded_args = [jax.device_put(prob[k], batched if k in ("q", "h", "b") else replicated)
                    for k in NAMES]
    plain_args = [jax.device_put(prob[k], devices[0]) for k in NAMES]

    f = jax.jit(run)
    xs, sts, gs = f(*sharded_args)
    xp, stp, gp = f(*plain_args)

    print(f"x_shards={len(xs.sharding.device_set)}")
    shard_shapes = sorted(tuple(s.data.shape) for s in xs.addressable_shards)
    print(f"x_shard_shapes={shard_shapes}")
    xs, xp = np.asarray(xs), np.asarray(xp)
    print(f"x_err={np.max(np.abs(xs - xp)) / np.max(np.abs(xp)):.3e}")
    errs = [np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(np.max(np.abs(np.asarray(b))),
                                                                1e-300)
            for a, b in zip(gs, gp)]
    print(f"grad_err={max(errs):.3e}")
    ok = np.all(np.asarray(sts) == 0) and np.all(np.asarray(stp) == 0)
    print("status=" + ("all_solved" if ok else f"{np.asarray(sts)} {np.asarray(stp)}"))


if __name__ == "__main__":
    main()
