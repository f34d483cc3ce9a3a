"""Selecting and writing back subsets of lanes.

A batch iterates until its slowest lane is done; on backends whose arrays hold
concrete values (``ops.eager``), the interior-point loop instead works on the
lanes still running, re-selected whenever enough of them have finished (see
``_pdipm``), and work that concerns a few lanes (the polish's active-set swaps,
the resumed lanes' polish) runs on those alone (:func:`on_lanes`). Everything here
is written against the Array API: ``take`` to select, ``searchsorted`` + ``take`` +
``where`` to write back (no index assignment, which the standard does not have).
"""

from __future__ import annotations

from array_api_compat import is_array_api_obj

from ._problem import Problem


def _is_lane_array(v, B):
    shape = None if isinstance(v, type) else getattr(v, "shape", None)
    return isinstance(shape, tuple) and len(shape) >= 1 and shape[0] == B


def take_problem(xp, prob: Problem, idx, B: int) -> Problem:
    """``prob`` restricted to lanes ``idx`` (1-D int array); shared (lead 1) data stay shared."""
    fields = {}
    for name in ("Q", "q", "G", "h", "A", "b", "bad", "h_free"):
        v = getattr(prob, name)
        if _is_lane_array(v, B) and B != 1:
            fields[name] = xp.take(v, idx, axis=0)
    return prob._replace(**fields)


def _rebuild(v, items):
    return type(v)(*items) if hasattr(v, "_fields") else tuple(items)


def take_state(xp, st, idx, B: int):
    """A (nested) NamedTuple restricted to lanes ``idx``.

    Arrays whose leading dimension is ``B`` are lane arrays; anything else (0-d
    scalars, shared arrays, Python values) is kept as it is.
    """
    def sel(v):
        if isinstance(v, tuple):
            return _rebuild(v, [sel(u) for u in v])
        return xp.take(v, idx, axis=0) if _is_lane_array(v, B) else v

    return sel(st)


def put_state(xp, full, part, idx, B: int, ops=None, inplace: bool = False):
    """Write ``part`` (lanes ``idx``, sorted) back into ``full`` (B lanes), a (nested) NamedTuple.

    Whatever is not a lane array of ``full`` (0-d scalars, Python values) is taken from ``part``.
    With ``ops`` whose ``put_lanes`` is set, arrays of more than two dimensions (every
    array, on traced backends: a block's writes then cost its size, not the batch's) are
    written with it (one copy of ``full`` instead of a gather and a selection), and
    with ``inplace`` (every such array of ``full`` is the caller's temporary) into
    ``full`` itself where the backend can: only the lanes ``idx`` are written.
    """
    k = idx.shape[0]
    lanes = xp.arange(B, dtype=idx.dtype, device=getattr(idx, "device", None))
    pos = xp.searchsorted(idx, lanes)
    pos = xp.clip(pos, 0, max(k - 1, 0))
    member = xp.take(idx, pos, axis=0) == lanes

    def put(f, p):
        if isinstance(f, tuple):
            return _rebuild(f, [put(a, b) for a, b in zip(f, p, strict=True)])
        if not _is_lane_array(f, B):
            return p
        if ops is not None and ops.put_lanes is not None and (len(f.shape) > 2
                                                               or not ops.eager):
            return ops.put_lanes(f, p, idx, inplace)
        mask = xp.reshape(member, (B,) + (1,) * (len(f.shape) - 1))
        return xp.where(mask, xp.take(p, pos, axis=0), f)

    return put(full, part)


def first_lanes(xp, mask, size: int):
    """(size,) the indices of the first ``size`` lanes where ``mask`` (B,) is True, in
    increasing order, then ``B`` where fewer are: a fixed-size subset for traced loops
    (with ``ops.put_lanes``, writes to index ``B`` are dropped; ``put_state`` skips them).
    The i-th True lane is where the running count of True lanes first reaches i."""
    count = xp.cumulative_sum(xp.astype(mask, xp.int32))
    wanted = xp.arange(1, size + 1, dtype=xp.int32, device=getattr(mask, "device", None))
    return xp.searchsorted(count, wanted)


def on_lanes(xp, ops, mask, fn, prob: Problem, args, old, *, inplace: bool = False):
    """``old`` with the lanes where ``mask`` (B,) is True replaced by those of
    ``fn(prob, args)``.

    ``fn`` maps a problem and ``args`` (a nested tuple of lane arrays) to a structure like
    ``old``, lane by lane. Traced backends call it on the whole batch and select; eager
    ones call it on the lanes of ``mask`` alone (not at all if there are none: one host
    read), and write them back (``put_state``; ``inplace``: every array of ``old`` with
    more than two dimensions is the caller's temporary).
    """
    B = mask.shape[0]
    if not ops.eager:
        return where_lanes(xp, mask, fn(prob, args), old, B)
    idx = xp.nonzero(mask)[0]
    if idx.shape[0] == 0:
        return old
    new = fn(take_problem(xp, prob, idx, B), take_state(xp, args, idx, B))
    return put_state(xp, old, new, idx, B, ops, inplace=inplace)


def where_lanes(xp, mask, new, old, B: int):
    """``new`` where ``mask`` (B,) is True, else ``old``, leaf by leaf over (nested)
    NamedTuples of the same structure; non-lane leaves are taken from ``new``."""
    def pick(n, o):
        if isinstance(n, tuple):
            return _rebuild(n, [pick(a, b) for a, b in zip(n, o, strict=True)])
        if not _is_lane_array(n, B):
            return n
        return xp.where(xp.reshape(mask, (B,) + (1,) * (len(n.shape) - 1)), n, o)

    return pick(new, old)


def split_arrays(tree):
    """The array leaves of a (nested) tuple, and a function that rebuilds the tree
    from a list of such leaves (the rest -- ints, dtypes, dicts -- is kept).

    For ``ops.cond``, whose branches may only return arrays.
    """
    leaves = []

    def walk(v):
        if isinstance(v, tuple):
            kids = [walk(u) for u in v]
            return lambda it: _rebuild(v, [k(it) for k in kids])
        if is_array_api_obj(v):
            leaves.append(v)
            return lambda it: next(it)
        return lambda it: v

    build = walk(tree)
    return leaves, lambda arrays: build(iter(arrays))


def zeros_of(xp, ops, fn):
    """Zero leaves shaped as :func:`split_arrays` of ``fn()``'s result, and the function
    that rebuilds such a result from its leaves: the initial carry of a traced loop whose
    body computes ``fn``'s kind of result. Where the backend can (``ops.abstract_zeros``)
    ``fn`` is traced abstractly and never run."""
    box = {}

    def probe():
        leaves, box["rebuild"] = split_arrays(fn())
        return leaves

    zeros = (ops.abstract_zeros(probe) if ops.abstract_zeros is not None
             else [xp.zeros_like(a) for a in probe()])
    return zeros, box["rebuild"]
