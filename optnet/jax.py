"""JAX interface: ``optnet.jax.solve`` (jit, vmap, grad and forward mode)."""

from .adapters.jax_autodiff import solve

__all__ = ["solve"]
