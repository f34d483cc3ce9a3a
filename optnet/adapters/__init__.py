"""Framework adapters: the autodiff rules and modules of each framework (a
``torch.autograd.Function`` and ``nn.Module``, JAX's custom derivative rules).

They are not backends: a backend (``optnet/backends/``) supplies arrays and the
core's primitives; an adapter registers the core's derivatives (``_adjoint``) with
a framework's autodiff. Imported on first use only (``optnet.torch``, ``optnet.jax``).
"""


def outputs(x, z, y, status_codes, duals: bool, status: bool):
    """``x``, or the tuple ``(x[, z, y][, status])`` the ``solve`` functions return."""
    out = (x,)
    if duals:
        out += (z, y)
    if status:
        out += (status_codes,)
    return out[0] if len(out) == 1 else out
