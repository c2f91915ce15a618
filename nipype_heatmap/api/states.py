"""Saved states as transactions: merging (map-reduce) and exact updates."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence

from ..accumulate import HeatmapAccumulator, SourceRecord, values_on_grid
from ..accumulate.sum import UNIT_ROUNDOFF
from ..io import (
    OutputPlan,
    file_identity,
    locked,
    read_volume,
    recover_interrupted_commits,
    same_target,
    warn_duplicates,
)
from ..io.locking import DEFAULT_TIMEOUT
from ..options import CohortOptions, MapOptions
from ..state import load_state
from .inputs import accumulate_files, add_files
from .outputs import plan_fixed_maps, plan_inputs_and_mincount, plan_maps, write_maps

__all__ = [
    "merge_and_write",
    "update_state",
    "within_promise",
]

LOGGER = logging.getLogger(__name__)


def merge_and_write(
    state_files: Sequence[str | os.PathLike[str]],
    out_file: str | os.PathLike[str],
    *,
    options: MapOptions = MapOptions(),
    cohort: CohortOptions = CohortOptions(),
) -> tuple[HeatmapAccumulator, dict[str, str]]:
    """Merge states (map-reduce) and write the maps of all their inputs.

    Returns
    -------
    accumulator, dict
        The merged accumulator, and role -> path of what was written.
    """
    from ..state import merge_states

    with OutputPlan() as plan:
        plan.refuse_inputs(state_files, "state")
        for folder in {os.path.dirname(os.path.abspath(f)) for f in state_files}:
            recover_interrupted_commits(folder)  # a state an interrupted run was replacing
        acc = merge_states(state_files)
        plan.refuse_inputs((r.path for r in acc.records), "input of a merged state")
        plan_maps(plan, out_file, cohort, acc.n_inputs)
        write_maps(acc, plan, options, cohort)
        return acc, plan.commit()


def within_promise(acc: HeatmapAccumulator) -> bool:
    """Whether an updated state's maps are what the documentation promises against a
    recompute from its inputs.

    Integer states: bit for bit, wherever a recompute is exact (its sums within 2**53, its
    sums of squares within int64's exact range). Otherwise: every voxel's sum within
    ``2 n u M`` of the exact sum (``u = 2**-53``, ``M`` the sum of the inputs' largest
    absolute values), so within ``3 n u M`` of a recompute's, which is within ``n u M`` of
    it.
    """
    records = acc.records
    if all(r.integer for r in records):
        ranges = [r.value_range or (0.0, 0.0) for r in records]
        low = sum(min(int(lo), 0) for lo, _ in ranges)
        high = sum(max(int(hi), 0) for _, hi in ranges)
        if max(-low, high) <= 2**53 and not acc.exact:
            return False
        squares = sum(max(int(lo) ** 2, int(hi) ** 2) for lo, hi in ranges)
        spread = acc.spread
        if spread is not None and not spread.exact and len(records) * squares < 2**62:
            return False
    n, magnitude = acc.n_inputs, acc.sum.magnitude
    return acc.sum.rounding <= 2 * n * UNIT_ROUNDOFF * magnitude


def update_state(
    state_file: str | os.PathLike[str],
    *,
    add: Sequence[str | os.PathLike[str]] = (),
    remove: Sequence[str | os.PathLike[str]] = (),
    out_state: str | os.PathLike[str] | None = None,
    out_file: str | os.PathLike[str] | None = None,
    options: MapOptions = MapOptions(),
    cohort: CohortOptions = CohortOptions(),
    num_threads: int | None = None,
    progress: bool | None = None,
    debug: bool = False,
    lock_timeout: float = DEFAULT_TIMEOUT,
) -> tuple[HeatmapAccumulator, dict[str, str]]:
    """Add files to a saved state and remove files from it, as one transaction.

    The state's inputs become: its inputs without ``remove``, in their order, then ``add``,
    in theirs. The maps of the updated state equal a recompute from that list: bit for bit
    while every input is an integer volume (masks, counts), and within the documented
    rounding bound otherwise (:func:`within_promise`); where an update could not keep that
    (a removal that cancels values much larger than what remains), the state is recomputed
    from its remaining inputs, each checked against its recorded content hash.

    The state file is locked (``<state>.lock``) from reading it to replacing it: a
    concurrent update of the same state waits (up to ``lock_timeout`` seconds), and never
    loses the other's changes (an update into another file, ``out_state``, only reads it,
    and takes no lock beside it: its folder may be read-only). The updated state and the
    maps (with ``out_file``) are written together: a failure or a kill never leaves a new
    state beside old maps, and the same command can then be run again.

    Parameters
    ----------
    state_file : str or os.PathLike
        A saved state (:func:`write_cohort_maps` with ``state_file``, ``--save-state``,
        :class:`~nipype_heatmap.interfaces.HeatmapState`).
    add : sequence of path-like
        Files to add; none may already be an input of the state (the same path, or a link
        to the same file with the same content). Equal copies of an input are accepted
        (and logged): the empty masks of two controls are identical.
    remove : sequence of path-like
        Inputs to remove (their path as recorded, or a link to the same file); each must be
        unchanged since it was added (its content hash is checked).
    out_state : path-like, optional
        Where the updated state goes; default: replace ``state_file``.
    out_file : path-like, optional
        Also write the maps of the updated state (the heatmap, and the cohort maps of
        ``cohort`` beside it).
    options, cohort
        What the maps are (:class:`~nipype_heatmap.options.MapOptions`,
        :class:`~nipype_heatmap.options.CohortOptions`).
    num_threads, progress, debug
        As for :func:`accumulate_files`.
    lock_timeout : float, default=600
        Seconds to wait for another update of the same state.

    Returns
    -------
    accumulator, dict
        The updated state, and role (``state``, ``heatmap``, cohort maps) -> path.

    Raises
    ------
    ValueError
        If a file to remove is not in the state or changed; a file to add is already in
        it; nothing would be left; an output is one of the files read; or a recompute
        needs an input that is missing or changed (naming it). Nothing is written then.
    LockTimeout
        If another run holds the state for longer than ``lock_timeout``.
    """
    state_path = os.path.abspath(os.fspath(state_file))
    guard: contextlib.AbstractContextManager[None]
    if out_state is None or same_target(out_state, state_path):  # read, changed, replaced
        guard = locked(f"{state_path}.lock", what=f"the state {state_path}", timeout=lock_timeout)
    else:  # only read, and replaced atomically by others: its folder may be read-only
        guard = contextlib.nullcontext()
    with guard:
        # an earlier update killed between its renames: its state first, then this one
        recover_interrupted_commits(os.path.dirname(state_path))
        with OutputPlan() as plan:  # the outputs are checked before the state is read
            plan.refuse_inputs([state_path], "state being updated", replaced_by="state")
            plan.add("state", out_state if out_state is not None else state_path)
            if out_file is not None:
                plan_fixed_maps(plan, out_file, cohort)
            acc = load_state(state_path)
            # the file at each recorded path now: what a file to add or remove is matched to
            identities = [file_identity(r.path) for r in acc.records] if add or remove else []
            indices = _removal_indices(acc, state_path, remove, identities)
            plan.refuse_inputs([acc.records[i].path for i in indices], "input to remove")
            kept = [r.path for i, r in enumerate(acc.records) if i not in indices]
            plan.refuse_inputs(kept, "input of the state")
            n_kept = acc.n_inputs - len(indices)
            to_add = plan_inputs_and_mincount(plan, add, cohort, n_kept, allow_empty=True)
            if n_kept + len(to_add) < 1:
                raise ValueError(f"{state_path}: removing every input would leave an empty state")
            _refuse_already_added(acc, state_path, to_add, identities)
            warn_duplicates(to_add)
            if to_add:  # first, so that every input may go: a state is never empty
                _add_new(acc, to_add, num_threads=num_threads, progress=progress, debug=debug)
            for index in sorted(indices, reverse=True):
                record = acc.records[index]
                volume = read_volume(record.path, digest=True)
                _check_unchanged(volume.digest, record, "remove it")
                acc.remove(values_on_grid(volume, acc.reference.grid), index)
            if not within_promise(acc):
                LOGGER.warning(
                    "%s: the removal cancelled values much larger than those left (or left a "
                    "sum that is no longer exact); recomputing the state from its %d "
                    "remaining input(s)",
                    state_path,
                    acc.n_inputs,
                )
                acc = _recompute(acc, num_threads)
            write_maps(acc, plan, options, cohort)
            written = plan.commit()
    return acc, written


def _removal_indices(
    acc: HeatmapAccumulator,
    state_path: str,
    remove: Sequence[str | os.PathLike[str]],
    identities: Sequence[tuple[int, int] | None],
) -> list[int]:
    """The positions of the inputs to remove: by their recorded path, or a link to the file
    at that path now (``identities``, one per input; not by the recorded inode: files
    restored under their paths get new ones, and the system gives freed ones to other
    files); each once."""
    indices: list[int] = []
    for item in remove:
        path = os.path.abspath(os.fspath(item))
        identity = file_identity(path)
        found = [
            i
            for i, r in enumerate(acc.records)
            if i not in indices
            and (r.path == path or (identity is not None and identities[i] == identity))
        ]
        if not found:
            raise ValueError(
                f"{path}: not an input of the state {state_path} (or listed twice); nothing "
                "to remove (inputs are matched by their recorded path, or a link to the same "
                "file)"
            )
        exact = [i for i in found if acc.records[i].path == path]
        index = (exact or found)[-1]  # the input recorded under this name, else a link
        if acc.records[index].digest is None:
            raise ValueError(
                f"{path}: the state {state_path} has no content hash of this input (it was "
                "saved without hashes), so its removal cannot be checked; recompute the state "
                "from the files to keep (--save-state records every hash)"
            )
        indices.append(index)
    return indices


def _refuse_already_added(
    acc: HeatmapAccumulator,
    state_path: str,
    to_add: Sequence[str],
    identities: Sequence[tuple[int, int] | None],
):
    """Refuse a file to add that is already an input: the same path, or the file (device and
    inode) at its recorded path now (``identities``), whatever inode was recorded (files
    restored or synced under their paths get new ones)."""
    for path in to_add:
        identity = file_identity(path)
        for number, record in enumerate(acc.records, start=1):
            same_file = identity is not None and identities[number - 1] == identity
            if record.path == path or same_file:
                raise ValueError(
                    f"{path}: already an input of the state {state_path} (input {number}, "
                    f"{record.path}); to replace it with a corrected version, remove it while "
                    "the old version is still there (the removal checks its hash), then add "
                    "the new one"
                )


def _check_unchanged(digest: str | None, record: SourceRecord, to_do: str) -> None:
    if digest != record.digest:
        raise ValueError(
            f"{record.path}: the file has changed since it was added (content hash "
            f"{digest} is not the recorded {record.digest}); cannot {to_do}: restore the "
            "original file, or recompute the map from the files as they are now"
        )


def _recompute(acc: HeatmapAccumulator, num_threads: int | None) -> HeatmapAccumulator:
    """The state of an accumulator's inputs made anew from their files (hashes checked)."""
    records = list(acc.records)
    fresh = accumulate_files(
        [r.path for r in records], digests=True, num_threads=num_threads, **acc.tracks
    )
    for new, old in zip(fresh.records, records, strict=True):
        _check_unchanged(new.digest, old, "recompute the state")
    return fresh


def _add_new(
    acc: HeatmapAccumulator,
    to_add: Sequence[str],
    *,
    num_threads: int | None,
    progress: bool | None,
    debug: bool,
) -> None:
    """Add files to a state, hashing them, and log those with the content of an input.

    Files that are inputs already (the same path, or the file at a recorded path now) were
    refused before (:func:`_refuse_already_added`). An inode number recorded earlier is not
    compared: the system gives freed numbers to new files, so a match may be an equal copy.
    """
    before = {r.digest: r for r in acc.records if r.digest}
    start = acc.n_inputs
    add_files(acc, to_add, digests=True, num_threads=num_threads, progress=progress, debug=debug)
    for record in acc.records[start:]:
        old = before.get(record.digest) if record.digest else None
        if old is None:
            continue
        LOGGER.info(
            "%s: identical content to the input %s; counted as its own input (equal "
            "copies are legitimate, e.g. empty masks)",
            record.path,
            old.path,
        )
