"""The output plan of a run: every file it will write, known before any input is read, and
written together.

A run first declares each output with its role (``plan.add("heatmap", path)``,
``plan.add("state", path)``, ``plan.add("sidecar", path)``...). Declaring checks, before
anything is read:

- the name (a NIfTI output must end in ``.nii`` or ``.nii.gz``), that the folder can be
  created and written, and that the path is not a folder;
- that no two outputs are one file (the same path, a link to it, or a hard link);
- that no output is a file the run reads (:meth:`OutputPlan.refuse_inputs`): an input, a
  state, a table. Files are compared by identity (device and inode, through links), and
  the error names both roles.

Then the run computes, and hands each output's bytes to :meth:`OutputPlan.write`, which
puts them in a temporary file beside the output. Nothing replaces an existing file until
:meth:`OutputPlan.commit`, which runs only once every output is complete and on disk: it
renames the temporary files over the outputs. A failure before that removes the temporary
files and leaves every previous output as it was.

**Several files, one set.** The renames of one commit cannot all happen at the same
instant. So that a set is never two runs' halves, a commit of several files first takes
the lock of every folder it writes into (``.nipype_heatmap.lock``, see
:mod:`~nipype_heatmap.io.locking`), and writes a journal (``.nipype_heatmap-commit-*.json``
in each of those folders) that lists every rename; it removes the journal after the last
rename. A run killed between the renames leaves the journal and the temporary files
behind; the next run that writes into one of those folders finds the journal and completes
the renames (every temporary file was complete before the first rename), so the set
becomes the interrupted run's whole set, never a mix. A single file needs none of this: one
rename is atomic.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import logging
import os
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import nibabel as nb

from .discovery import file_identity
from .locking import folder_lock, locked
from .writing import (
    Chunks,
    Temporary,
    check_output_filename,
    fsync_folder,
    image_chunks,
    remove_stale_temporaries,
)

__all__ = [
    "JOURNAL_PREFIX",
    "CommitInterrupted",
    "OutputPlan",
    "PlannedOutput",
    "recover_interrupted_commits",
    "same_target",
    "write_atomic",
]

LOGGER = logging.getLogger(__name__)


class CommitInterrupted(KeyboardInterrupt):
    """Ctrl-C between the renames of a commit: some outputs are in place, the rest are
    kept with a journal for the next run into their folders (the message says which)."""


#: Journal files of commits under way (or interrupted): ``<prefix><id>.json``.
JOURNAL_PREFIX = ".nipype_heatmap-commit-"


@dataclass(frozen=True)
class PlannedOutput:
    """One file of a plan.

    Attributes
    ----------
    role : str
        What the file is, for messages and lookups ("heatmap", "coverage", "state"...).
    path : str
        Its absolute path.
    """

    role: str
    path: str


class OutputPlan:
    """Every file a run writes: declared first, checked, written together (module doc).

    Use as a context manager: leaving the block without :meth:`commit` (an error) removes
    whatever was written to temporary files.

    Examples
    --------
    >>> with OutputPlan() as plan:
    ...     out = plan.add("table", "tables/counts.tsv", nifti=False)
    ...     plan.write("table", [b"k\\tvoxels\\n1\\t42\\n"])
    ...     written = plan.commit()
    >>> written == {"table": out}
    True
    >>> open(out).read()
    'k\\tvoxels\\n1\\t42\\n'
    """

    def __init__(self) -> None:
        self._outputs: dict[str, PlannedOutput] = {}
        self._targets: dict[str, _Target] = {}  # role -> what the output's path names
        self._reads: list[tuple[str, _Target, str | None]] = []  # (role, file, replaced_by)
        self._written: dict[str, Temporary] = {}
        self.committed = False

    # -- declaring --------------------------------------------------------------------
    def add(self, role: str, path: str | os.PathLike[str], *, nifti: bool = True) -> str:
        """Declare an output; return its absolute path.

        Creates the folder, proves it writable, completes any interrupted commit found
        there, removes this output's stale temporary files, and checks the path against
        the outputs and reads declared so far.

        Raises
        ------
        ValueError
            If ``role`` is declared twice, the name is not a NIfTI name (``nifti=True``), or
            the path is another output's or a file the run reads (both roles named).
        OSError
            If the folder cannot be created or written, or the path is a folder.
        """
        if role in self._outputs:
            raise ValueError(f"the output {role!r} is declared twice")  # a bug, not input
        out_file = os.path.abspath(os.fspath(path))
        folder, name = os.path.split(out_file)
        if nifti:
            check_output_filename(name)
        target = _Target.of(out_file)
        for other, other_target in self._targets.items():
            if target.same(other_target):
                raise ValueError(
                    f"{out_file}: both the {other} and the {role} would be written to "
                    "this file; give them different names"
                )
        for read_role, read, replaced_by in self._reads:
            if replaced_by != role:
                _refuse_overwriting(target, role, read, read_role)
        _prepare_folder(folder, out_file)
        recover_interrupted_commits(folder)
        remove_stale_temporaries(out_file)
        self._outputs[role] = PlannedOutput(role, out_file)
        self._targets[role] = target
        return out_file

    def refuse_inputs(
        self,
        paths: Iterable[str | os.PathLike[str]],
        role: str = "input",
        *,
        replaced_by: str | None = None,
    ) -> None:
        """Declare files the run reads; refuse any that is (or will be) one of its outputs.

        ``replaced_by`` names the one output that may replace them (a state updated in
        place).

        Raises
        ------
        ValueError
            Naming the file and both roles.
        """
        for path in paths:
            read = _Target.of(path)  # once per file: a state may list tens of thousands
            for output_role, target in self._targets.items():
                if output_role != replaced_by:
                    _refuse_overwriting(target, output_role, read, role)
            self._reads.append((role, read, replaced_by))

    def path(self, role: str) -> str:
        """The path of a declared output."""
        return self._outputs[role].path

    def __contains__(self, role: object) -> bool:
        return role in self._outputs

    @property
    def outputs(self) -> list[PlannedOutput]:
        """The declared outputs, in the order they were declared."""
        return list(self._outputs.values())

    def is_output(self, path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` is one of the declared outputs (the file there, by identity)."""
        return self._names_output(_Target.of(path))

    def involves(self, path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` is one of the declared outputs or files read (a state)."""
        target = _Target.of(path)
        return self._names_output(target) or any(target.same(r) for _, r, _ in self._reads)

    def _names_output(self, target: _Target) -> bool:
        return any(target.same(output) for output in self._targets.values())

    # -- writing ----------------------------------------------------------------------
    def write(self, role: str, chunks: Chunks) -> None:
        """Write an output's bytes to its temporary file (gzip for a ``.gz`` name).

        Raises
        ------
        OSError
            Naming the output (full disk, quota...); nothing is replaced.
        """
        if role in self._written:
            raise ValueError(f"the output {role!r} is written twice")  # a bug, not input
        temporary = Temporary(self._outputs[role].path)
        self._written[role] = temporary
        temporary.write(chunks)

    def write_image(self, role: str, img: nb.Nifti1Image) -> None:
        """Write a NIfTI image as an output (see :meth:`write`)."""
        self.write(role, image_chunks(img))

    def write_text(self, role: str, text: str) -> None:
        """Write UTF-8 text as an output (see :meth:`write`)."""
        self.write(role, [text.encode("utf-8")])

    def write_json(self, role: str, content: object) -> None:
        """Write JSON (indented, UTF-8, a final newline) as an output."""
        self.write_text(role, json.dumps(content, indent=2) + "\n")

    def commit(self) -> dict[str, str]:
        """Put every output in place; return ``role -> path``.

        Raises
        ------
        RuntimeError
            If a declared output was not written (a bug of the caller).
        OSError
            If an output path became a folder since it was planned (then no output was
            replaced), or a rename fails for the system. An error or an interrupt (Ctrl-C)
            between the renames of several files leaves the rest, complete, for the next
            run into those folders to put in place, as after a kill (module doc).
        CommitInterrupted
            On Ctrl-C between those renames (a ``KeyboardInterrupt`` that says so).
        """
        missing = [role for role in self._outputs if role not in self._written]
        if missing:
            raise RuntimeError(f"outputs declared but not written: {missing}")
        entries = [(t.path, t.out_file) for t in self._written.values()]
        if len(entries) == 1:
            temporary = next(iter(self._written.values()))
            _check_destinations(entries)
            temporary.rename()
            fsync_folder(os.path.dirname(temporary.out_file))
        else:
            folders = sorted({os.path.dirname(final) for _, final in entries})
            with contextlib.ExitStack() as stack:
                for folder in folders:  # one order everywhere: no deadlock
                    stack.enter_context(
                        locked(folder_lock(folder), what=f"the output folder {folder}")
                    )
                _check_destinations(entries)
                journals = _write_journals(folders, entries)
                try:
                    for temporary in self._written.values():
                        temporary.rename()
                except BaseException as err:
                    for temporary in self._written.values():  # the journal's, from now on
                        temporary.close(keep=True)
                    self._written.clear()
                    rest = (
                        "the files not yet in place are kept with a journal, and the next "
                        "run writing there completes the set: run the command again"
                    )
                    if isinstance(err, KeyboardInterrupt):
                        raise CommitInterrupted(
                            f"{', '.join(folders)}: interrupted while replacing the "
                            f"outputs; {rest}"
                        ) from err
                    if not isinstance(err, OSError):
                        raise
                    raise type(err)(
                        err.errno,
                        f"{', '.join(folders)}: replacing the outputs failed part way "
                        f"({err.strerror or err}); {rest}",
                    ) from err
                for folder in folders:
                    fsync_folder(folder)
                for journal in journals:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(journal)
        self.committed = True
        self.close()
        return {role: output.path for role, output in self._outputs.items()}

    def close(self) -> None:
        """Remove the temporary files of anything not committed; release their locks."""
        for temporary in self._written.values():
            temporary.close()
        self._written.clear()

    def __enter__(self) -> OutputPlan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class _Target:
    """What a path names: for an existing file, its identity (device and inode: through
    links, hard links too); for a file that does not exist yet, its real path (links
    resolved), computed only when two such paths are compared."""

    path: str
    identity: tuple[int, int] | None

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> _Target:
        absolute = os.path.abspath(os.fspath(path))
        return cls(absolute, file_identity(absolute))

    @functools.cached_property
    def real(self) -> str:
        return os.path.realpath(self.path)

    def same(self, other: _Target) -> bool:
        if self.identity is not None and other.identity is not None:
            return self.identity == other.identity  # two existing files
        if (self.identity is None) != (other.identity is None):
            return False  # an existing file is never a path where no file is
        return self.real == other.real  # two files to be: where their links lead


def same_target(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name one file: the same path once links are resolved (also for
    files that do not exist yet), or the same existing file (device and inode, which also
    catches hard links)."""
    return _Target.of(a).same(_Target.of(b))


def _refuse_overwriting(out: _Target, role: str, read: _Target, read_role: str) -> None:
    if out.same(read):
        out_file, read_path = out.path, read.path
        same = "" if out_file == read_path else f" (the same file as {read_path})"
        raise ValueError(
            f"{out_file}: the {role} would overwrite the {read_role} there{same}; "
            "choose another output name or folder"
        )


def _prepare_folder(folder: str, out_file: str) -> None:
    """Create the folder, prove it writable, and refuse an output path that is a folder."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise type(err)(
            err.errno, f"{folder}: cannot create the output folder ({err.strerror})"
        ) from err
    if os.path.isdir(out_file):
        raise IsADirectoryError(
            errno.EISDIR, f"{out_file}: output path is an existing folder; choose another name"
        )
    try:  # unnamed where the system allows it: nothing to clean up, even after a kill
        with tempfile.TemporaryFile(prefix=".nipype_heatmap_probe_", dir=folder):
            pass
    except OSError as err:
        raise type(err)(
            err.errno, f"{folder}: output folder is not writable ({err.strerror})"
        ) from err


def _check_destinations(entries: list[tuple[str, str]]) -> None:
    """Refuse, before the first rename, an output path that became a folder since it was
    planned: its rename would fail after others had replaced their files."""
    for _, final in entries:
        if os.path.isdir(final) and not os.path.islink(final):
            raise IsADirectoryError(
                errno.EISDIR,
                f"{final}: output path is now a folder (made while this run was writing); "
                "no output was replaced: move it away and run again",
            )


# -- the journal of a commit -------------------------------------------------------------
def _write_journals(folders: Sequence[str], entries: list[tuple[str, str]]) -> list[str]:
    """Write the journal of a commit into each of its folders, on disk before any rename."""
    name = f"{JOURNAL_PREFIX}{uuid.uuid4().hex}.json"
    journals = [os.path.join(folder, name) for folder in folders]
    text = json.dumps({"renames": entries, "journals": journals}, indent=1).encode()
    for journal in journals:
        fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, text)
            os.fsync(fd)
        finally:
            os.close(fd)
    for folder in folders:
        fsync_folder(folder)
    return journals


def recover_interrupted_commits(folder: str | os.PathLike[str]) -> list[str]:
    """Complete the commits that a killed run left half done in ``folder``.

    A journal lists every rename of its commit; its temporary files were complete before
    the first rename, so finishing the renames gives that commit's whole set. Returns the
    outputs put in place (and logs them).
    """
    folder = os.fspath(folder)
    try:
        with os.scandir(folder) as entries:
            journals = [e.path for e in entries if e.name.startswith(JOURNAL_PREFIX)]
    except OSError:
        return []
    if not journals:
        return []
    completed: list[str] = []
    with locked(folder_lock(folder), what=f"the output folder {folder}"):
        for journal in journals:
            try:
                with open(journal, "rb") as fobj:
                    content = json.loads(fobj.read())
                renames = [(str(t), str(f)) for t, f in content["renames"]]
                copies = [str(j) for j in content["journals"]]
            except FileNotFoundError:
                continue  # completed by another run meanwhile
            except (OSError, ValueError, KeyError, TypeError) as err:
                LOGGER.warning("%s: unreadable commit journal left alone (%s)", journal, err)
                continue
            held = []
            for temp, final in renames:
                if _take_if_abandoned(temp):
                    try:
                        os.replace(temp, final)
                    except OSError as err:
                        raise type(err)(
                            err.errno,
                            f"{journal}: an interrupted run's outputs cannot be put in place "
                            f"({final}: {err.strerror or err}); remove what is in the way and "
                            f"run again, or delete {journal} and the .part files it lists to "
                            "discard that run's outputs",
                        ) from err
                    completed.append(final)
                elif os.path.lexists(temp):
                    held.append(temp)
            for folder_of in {os.path.dirname(f) for _, f in renames}:
                fsync_folder(folder_of)
            if held:  # a process still holds them (a child that inherited them): later
                LOGGER.warning(
                    "%s: interrupted write left for a later run: a running process holds %s",
                    journal,
                    ", ".join(held),
                )
                continue
            for copy in copies:
                with contextlib.suppress(OSError):
                    os.unlink(copy)
    if completed:
        LOGGER.warning(
            "Completed an earlier run's interrupted write of %d file(s) (it stopped between "
            "renames; its files were complete): %s",
            len(completed),
            ", ".join(completed),
        )
    return completed


def _take_if_abandoned(temp: str) -> bool:
    """Whether a journal's temporary file is still there and no writer holds it."""
    try:
        fd = os.open(temp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False  # renamed already
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def write_atomic(chunks: Chunks, path: str | os.PathLike[str]) -> str:
    """Write one file atomically (a plan of one output; gzip for a ``.gz`` name); return its
    absolute path."""
    with OutputPlan() as plan:
        plan.add("file", path, nifti=False)
        plan.write("file", chunks)
        return plan.commit()["file"]
