"""PyTorch interface: ``optnet.torch.solve``, ``QPFunction`` and the ``OptNetLayer`` module."""

from .adapters.torch_autograd import QPFunction, solve
from .adapters.torch_layer import OptNetLayer

__all__ = ["solve", "QPFunction", "OptNetLayer"]
