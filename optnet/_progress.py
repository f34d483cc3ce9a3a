"""The progress policy of the interior point: the best iterate so far, and stalling.

A lane's merit (``_terminate.classify``) usually falls by a large factor per
iteration; where the solves lose the accuracy the tolerance asks for it levels off
instead, and the lane would iterate to ``max_iter``. The policy keeps, per lane,

- ``best``: the smallest merit seen, and ``kept``: the iterate that had it (where a
  lane ends unsolved, the polish starts from there);
- ``anchor``: the merit at the last halving, and ``since``: iterations since then.

A nearly solved lane (best merit below ``tol ** Settings.stall_merit``) that has not
halved its merit in ``Settings.patience`` iterations has stalled; within
``Settings.stall_near`` times the tolerance, ``Settings.stall_fast`` iterations
suffice (the iterate is then as accurate as these solves make it, and the polish
takes over). A lane on its way to an infeasibility certificate has a growing merit
and never stalls. A lane the polish could not rescue after a fast stall goes on without
it (``patient``, set by ``_pdipm.resume``): it stalls after ``patience`` iterations only.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Progress(NamedTuple):
    """best (B,), kept (B, k) the stacked iterate of ``best``, anchor (B,), since (B,) int32,
    patient (B,) bool: no fast stall for the lane."""

    best: Any
    kept: Any
    anchor: Any
    since: Any
    patient: Any


def start(xp, iterate, dtype, device) -> Progress:
    """No merit seen yet; a copy of ``iterate`` (B, k) is kept until one is. (Every field
    is an array of its own: a compiled step, ``Ops.compile_step``, would otherwise
    specialize on their aliasing.)"""
    B = iterate.shape[0]

    def inf():
        return xp.full((B,), xp.inf, dtype=dtype, device=device)

    return Progress(best=inf(), kept=xp.asarray(iterate, copy=True), anchor=inf(),
                    since=xp.zeros((B,), dtype=xp.int32, device=device),
                    patient=xp.zeros((B,), dtype=xp.bool, device=device))


def restart(xp, pr: Progress, lanes, patient=None) -> Progress:
    """``pr`` with the progress count of ``lanes`` (B,) bool started afresh (no anchor);
    ``patient`` (B,) bool or None: lanes that no longer stall fast."""
    pr = pr._replace(anchor=xp.where(lanes, xp.inf, pr.anchor),
                     since=xp.where(lanes, 0, pr.since))
    return pr if patient is None else pr._replace(patient=pr.patient | patient)


def update(xp, cfg, pr: Progress, merit, iterate, counts):
    """Record the merit (B,) of ``iterate`` (B, k); returns the new :class:`Progress` and
    the lanes (B,) bool that have stalled. ``counts`` (B,) bool: the lanes whose
    iteration counts against their progress (not those whose solves were measured
    too inaccurate: the precision climbs for them instead)."""
    improved = merit < pr.best
    best = xp.where(improved, merit, pr.best)
    kept = xp.where(improved[:, None], iterate, pr.kept)
    halved = merit < 0.5 * pr.anchor
    anchor = xp.where(halved, merit, pr.anchor)
    since = xp.where(halved, 0, pr.since + xp.astype(counts, xp.int32))
    # The patience the lane's best merit allows (none above tol ** stall_merit).
    patience = xp.where(best <= cfg.tol ** cfg.stall_merit, cfg.patience,
                        xp.full_like(since, cfg.max_iter + 1))
    fast = (best <= cfg.stall_near * cfg.tol) & ~pr.patient
    stalled = since >= xp.where(fast, cfg.stall_fast, patience)
    return Progress(best, kept, anchor, since, pr.patient), stalled


def keep_last(xp, pr: Progress, merit, iterate, lanes) -> Progress:
    """After the loop: the last iterate of ``lanes`` (B,) bool may be the best yet."""
    improved = lanes & (merit < pr.best)
    return pr._replace(best=xp.where(improved, merit, pr.best),
                       kept=xp.where(improved[:, None], iterate, pr.kept))
