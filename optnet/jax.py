"""JAX interface: ``optnet.jax.solve`` (jit, vmap, grad and forward mode)."""

from .backends.jax_autodiff import solve

__all__ = ["solve"]
