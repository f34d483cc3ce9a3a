"""PyTorch interface: ``optnet.torch.solve``, ``QPFunction`` and the ``OptNetLayer`` module."""

from .backends.torch_autograd import QPFunction, solve
from .backends.torch_layer import OptNetLayer

__all__ = ["solve", "QPFunction", "OptNetLayer"]
