"""``--pair-wait``: a fusion set that lacks a modality waits for it, at the PACS bridge and at the DICOM node.

A set whose series are here but one modality is not (a T1 study came, its PD study not yet) is held, recorded
``waiting``, up to ``pair_wait_s`` from when the bridge (the node) first saw it; a later poll (round) that brings the
other modality forms the set whole and runs it. A set whose wait is over runs without the missing modality, as it
would have at once, and is remembered as a **lone set** (:meth:`PacsState.record_lone
<medanomaly.deploy.pacs_state.PacsState.record_lone>`: which modalities it had and lacked).

**A late partner does not wait.** A PD that comes after its T1 ran alone lacks a T1 that will not come again (the T1
was run; only new series are paired), so it runs at once, without T1, instead of waiting out its own wait: a set does
not wait when, for every modality it lacks, a lone set of the same study or patient (``studies``: the bridge asks the
PACS for the patient's studies; the node knows those it received since it started, and with ``--keyed-ids`` finds
the patient's lone sets by a patient key that lasts across restarts) had that modality and lacked one this set has.
Those lone sets are then answered (forgotten: the two have run, each without the other), and the late set is not
remembered as lone, so the patient's next visit waits again. The price: when a patient's T1 ran without PD and its PD
never came, the PD of a later visit that comes before its own T1 is taken for the late partner (it runs at once, and
that visit's T1 then waits out its wait): the two are told apart only by time, which the bridge does not judge.

Example:
    >>> ran_without(["PD"], ["T1"], [("1.2.3", frozenset({"T1"}), frozenset({"PD"}))])
    ['1.2.3']
    >>> ran_without(["PD"], ["T1"], [("1.2.4", frozenset({"PD"}), frozenset({"T1"}))])  # another PD ran alone
    []
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from medanomaly.deploy.batch_context import BatchContext
from medanomaly.deploy.pacs_state import WAITING, PacsState

__all__ = ["ran_without", "waiting_sets"]


def ran_without(present: Collection[str], missing: Collection[str],
                lone: Iterable[tuple[str, Collection[str], Collection[str]]]) -> list[str]:  # fmt: skip
    """The rows (series) of lone sets (``(row, present, missing)``) that had a modality in ``missing`` (names) and
    lacked one of ``present``, the first for each missing modality: the set's other modalities that ran already
    without it and will not come to pair; empty unless every missing modality has one."""
    lone, present = list(lone), set(present)
    rows = [next((row for row, had, lacked in lone if name in had and present & set(lacked)), None)
            for name in missing]  # fmt: skip
    if not rows or any(row is None for row in rows):
        return []
    return sorted({row for row in rows if row is not None})


def waiting_sets(decisions: Sequence[Any], state: PacsState, ctx: BatchContext, summary: Any,
                 studies: Sequence[str] = (), patient: str | None = None) -> set[str]:  # fmt: skip
    """The keys of the series of fusion sets that lack a modality and wait for it, ``ctx.options.pair_wait_s`` from
    when the bridge (the node) first saw them (recorded ``waiting``: not done, so a later poll forms their set again); a
    set whose wait is over runs without the missing modality, as it would have at once, and is recorded as a lone
    set; one whose missing modalities ran already without it (:func:`ran_without` over the lone sets of ``studies``
    and of the decisions' own studies, and of ``patient``: a patient key that lasts across runs, recorded with each
    lone set) runs too, and answers those lone sets. ``summary.waiting`` counts the sets held (the caller sets it to
    0 before a poll or a round)."""
    pair_wait_s = ctx.options.pair_wait_s
    studies = sorted({*studies, *(d.entry.study_uid or "" for d in decisions)} - {""})
    held: set[str] = set()
    for decision in decisions:
        fusion = ctx.sets.get(decision.entry.key) if decision.status == "run" else None
        missing = [name for name, member in fusion.members if member is None] if fusion is not None else []
        if not missing:
            continue
        names = [name for name, member in fusion.members if member is not None]
        present = [member for _, member in fusion.members if member is not None]
        if pair_wait_s > 0:
            partners = ran_without(names, missing, state.lone_sets(studies, ctx.fingerprint, patient))
            if partners:  # a late partner: runs now, and the pair is answered
                state.forget_lone(partners, ctx.fingerprint)
                continue
            if _still_waiting(present, missing, state, ctx):
                held.update(m.key for m in present)
                summary.waiting += 1
                continue
        primary = fusion.primary[1]
        state.record_lone(primary.key, ctx.fingerprint, primary.study_uid or "", names, missing, patient)
    return held


def _still_waiting(present: Sequence[Any], missing: Sequence[str], state: PacsState, ctx: BatchContext) -> bool:
    """Whether a set of the ``present`` series waits on for ``missing``: its wait began now (recorded ``waiting``)
    or less than ``pair_wait_s`` ago."""
    since = state.waiting_since([m.key for m in present], ctx.fingerprint)
    if since is None:
        for member in present:
            state.record(member.key, ctx.fingerprint, member.study_uid or "", WAITING,
                         f"its fusion set waits for {', '.join(missing)}")  # fmt: skip
        since = time.time()
    return time.time() - since < ctx.options.pair_wait_s
