"""Framework adapters: the autodiff rules and modules of each framework (a
``torch.autograd.Function`` and ``nn.Module``, JAX's custom derivative rules).

They are not backends: a backend (``optnet/backends/``) supplies arrays and the
core's primitives; an adapter registers the core's derivatives (``_adjoint``) with
a framework's autodiff. Imported on first use only (``optnet.torch``, ``optnet.jax``).
"""
