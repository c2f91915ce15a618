"""The output plan (every file a run writes: declared, checked, committed together) and the
locks between runs."""

from __future__ import annotations

import errno
import fcntl
import gzip
import json
import logging
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

from nipype_heatmap import io
from nipype_heatmap.io import locking, writing
from nipype_heatmap.io import plan as plan_module
from nipype_heatmap.io.plan import JOURNAL_PREFIX

from .conftest import (
    current_umask,
    open_descriptors,
    run_unprivileged,
    stop_after_the_first_rename,
)


def _leftovers(folder):
    """Temporary files and journals in a folder."""
    return sorted(
        name for name in os.listdir(folder) if name.endswith(".part") or JOURNAL_PREFIX in name
    )


def _both_roles(path, first, second):
    return re.escape(f"{path}: both the {first} and the {second} would be written to this file")


def _overwrites(out, role, read_role):
    return re.escape(f"{out}: the {role} would overwrite the {read_role} there")


# -- declaring: two roles on one file ----------------------------------------------------
@pytest.mark.parametrize("exists", [False, True], ids=["new", "existing"])
@pytest.mark.parametrize("how", ["same_path", "relative_path", "symlink", "symlinked_folder"])
def test_two_roles_on_one_file_are_refused_naming_both(tmp_path, monkeypatch, how, exists):
    out = tmp_path / "maps" / "heatmap.nii.gz"
    out.parent.mkdir()
    if exists:
        out.write_bytes(b"an earlier map")
    other = {
        "same_path": out,
        "relative_path": "maps/../maps/heatmap.nii.gz",
        "symlink": tmp_path / "link.nii.gz",
        "symlinked_folder": tmp_path / "alias" / "heatmap.nii.gz",
    }[how]
    if how == "symlink":
        other.symlink_to(out)  # dangling until the map exists: still the same file
    elif how == "symlinked_folder":
        (tmp_path / "alias").symlink_to(out.parent, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    with io.OutputPlan() as plan:
        plan.add("heatmap", out)
        with pytest.raises(
            ValueError, match=_both_roles(os.path.abspath(other), "heatmap", "coverage")
        ):
            plan.add("coverage", other)
        assert [o.role for o in plan.outputs] == ["heatmap"]


def test_a_hard_link_of_an_output_is_that_output(tmp_path):
    out = tmp_path / "state.nii.gz"
    out.write_bytes(b"a state")
    hard = tmp_path / "elsewhere" / "copy.nii.gz"
    hard.parent.mkdir()
    os.link(out, hard)
    with io.OutputPlan() as plan:
        plan.add("state", out, nifti=False)
        with pytest.raises(ValueError, match=_both_roles(hard, "state", "heatmap")):
            plan.add("heatmap", hard)


def test_a_role_declared_twice_is_a_bug_of_the_caller(tmp_path):
    with io.OutputPlan() as plan:
        plan.add("heatmap", tmp_path / "a.nii")
        with pytest.raises(ValueError, match="'heatmap' is declared twice"):
            plan.add("heatmap", tmp_path / "b.nii")


# -- declaring: an output that is a file the run reads ------------------------------------
@pytest.mark.parametrize("how", ["same_path", "symlink", "hardlink", "symlinked_folder"])
@pytest.mark.parametrize("order", ["read_first", "output_first"])
def test_an_output_that_is_a_file_read_is_refused_naming_both(tmp_path, how, order):
    read = tmp_path / "inputs" / "sub-01.nii.gz"
    read.parent.mkdir()
    read.write_bytes(b"an input")
    out = {
        "same_path": read,
        "symlink": tmp_path / "link.nii.gz",
        "hardlink": tmp_path / "hard.nii.gz",
        "symlinked_folder": tmp_path / "alias" / "sub-01.nii.gz",
    }[how]
    if how == "symlink":
        out.symlink_to(read)
    elif how == "hardlink":
        os.link(read, out)
    elif how == "symlinked_folder":
        (tmp_path / "alias").symlink_to(read.parent, target_is_directory=True)
    with io.OutputPlan() as plan:
        if order == "read_first":
            plan.refuse_inputs([read], "input")
            with pytest.raises(ValueError, match=_overwrites(out, "heatmap", "input")) as info:
                plan.add("heatmap", out)
            assert "heatmap" not in plan
        else:
            plan.add("heatmap", out)
            with pytest.raises(ValueError, match=_overwrites(out, "heatmap", "input")) as info:
                plan.refuse_inputs([read], "input")
    same = f" (the same file as {read})"
    assert (same in str(info.value)) == (how != "same_path")
    assert read.read_bytes() == b"an input"


def test_replaced_by_exempts_exactly_that_role(tmp_path):
    state = tmp_path / "state.nii.gz"
    state.write_bytes(b"the state")
    with io.OutputPlan() as plan:
        plan.refuse_inputs([state], "state", replaced_by="state")
        assert plan.add("state", state) == str(state)  # updated in place: allowed
        with pytest.raises(ValueError, match=_both_roles(state, "state", "heatmap")):
            plan.add("heatmap", state)
    with io.OutputPlan() as plan:
        plan.refuse_inputs([state], "state", replaced_by="state")
        with pytest.raises(ValueError, match=_overwrites(state, "heatmap", "state")):
            plan.add("heatmap", state)  # any other role is refused
    with io.OutputPlan() as plan:  # the other order
        plan.add("state", state)
        plan.refuse_inputs([state], "state", replaced_by="state")
        plan.add("heatmap", tmp_path / "map.nii.gz")
        with pytest.raises(ValueError, match=_overwrites(state, "state", "input")):
            plan.refuse_inputs([state], "input")  # as an input, it is refused


def test_what_a_plan_knows(tmp_path):
    state = tmp_path / "state.nii.gz"
    state.write_bytes(b"the state")
    with io.OutputPlan() as plan:
        out = plan.add("heatmap", tmp_path / "maps" / "map.nii.gz")
        plan.refuse_inputs([state], "state")
        assert out == str(tmp_path / "maps" / "map.nii.gz") and plan.path("heatmap") == out
        assert "heatmap" in plan and "state" not in plan
        assert plan.outputs == [io.PlannedOutput("heatmap", out)]
        assert plan.is_output(out) and not plan.is_output(state)
        assert plan.involves(out) and plan.involves(state)
        assert not plan.involves(tmp_path / "other.nii.gz")


# -- declaring: folders created and probed before anything is read ------------------------
def test_declaring_creates_the_folder_and_leaves_nothing_in_it(tmp_path):
    folder = tmp_path / "a" / "b" / "c"
    with io.OutputPlan() as plan:
        plan.add("heatmap", folder / "map.nii.gz")
        assert folder.is_dir() and os.listdir(folder) == []
    assert os.listdir(folder) == []


def test_a_folder_that_cannot_be_created_is_an_os_error_naming_it(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("a regular file where a folder is expected")
    with io.OutputPlan() as plan:
        with pytest.raises(OSError, match=re.escape(f"{blocker / 'sub'}: cannot create")):
            plan.add("heatmap", blocker / "sub" / "map.nii.gz")
        assert plan.outputs == []


def test_an_output_that_is_a_folder_is_refused(tmp_path):
    (tmp_path / "map.nii.gz").mkdir()
    with io.OutputPlan() as plan:
        with pytest.raises(IsADirectoryError, match=re.escape(str(tmp_path / "map.nii.gz"))):
            plan.add("heatmap", tmp_path / "map.nii.gz")


def test_non_nifti_names_are_refused_unless_declared_otherwise(tmp_path):
    with io.OutputPlan() as plan:
        with pytest.raises(ValueError, match="must end in .nii or .nii.gz"):
            plan.add("heatmap", tmp_path / "map.mgz")
        assert plan.add("table", tmp_path / "table.tsv", nifti=False)


def test_an_unwritable_folder_is_an_os_error_naming_it_as_an_unprivileged_user():
    """Permissions do not stop root, and CI runs as root: run this as 'nobody'."""
    result = run_unprivileged(
        """
        import os
        from nipype_heatmap.io import OutputPlan
        folder = os.path.join(WORK, "readonly")
        os.mkdir(folder)
        os.chmod(folder, 0o555)
        for path in (os.path.join(folder, "map.nii.gz"),
                     os.path.join(folder, "sub", "map.nii.gz")):
            try:
                with OutputPlan() as plan:
                    plan.add("heatmap", path)
            except PermissionError as err:
                print("PermissionError:", err)
        print("LISTING:", os.listdir(folder))
        """
    )
    lines = result.splitlines()
    errors = [line for line in lines if line.startswith("PermissionError:")]
    assert len(errors) == 2, result
    assert "readonly: output folder is not writable" in errors[0], result
    assert "readonly/sub: cannot create the output folder" in errors[1], result
    assert "LISTING: []" in lines, result


# -- writing and committing ---------------------------------------------------------------
def _declare(plan, paths):
    for role, path in paths.items():
        plan.add(role, path, nifti=False)


def test_nothing_is_replaced_until_commit(tmp_path):
    paths = {
        "heatmap": tmp_path / "map.nii",
        "table": tmp_path / "table.tsv",
        "sidecar": tmp_path / "sub" / "map.json",
    }
    for path in paths.values():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"old " + path.name.encode())
    with io.OutputPlan() as plan:
        _declare(plan, paths)
        plan.write("heatmap", [b"new ", b"map"])
        plan.write_text("table", "k\tvoxels\n")
        plan.write_json("sidecar", {"a": [1, 2]})
        for path in paths.values():
            assert path.read_bytes() == b"old " + path.name.encode()
        written = plan.commit()
    assert written == {role: str(path) for role, path in paths.items()}
    assert paths["heatmap"].read_bytes() == b"new map"
    assert paths["table"].read_text() == "k\tvoxels\n"
    assert paths["sidecar"].read_text() == '{\n  "a": [\n    1,\n    2\n  ]\n}\n'
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "sub") == []
    assert plan.committed


def test_an_error_inside_the_plan_leaves_old_files_and_no_temporary(tmp_path):
    paths = {"heatmap": tmp_path / "map.nii.gz", "state": tmp_path / "sub" / "state.nii.gz"}
    for path in paths.values():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="computation failed"), io.OutputPlan() as plan:
        _declare(plan, paths)
        plan.write("heatmap", [os.urandom(10_000)])
        plan.write("state", [os.urandom(10_000)])
        assert len(_leftovers(tmp_path)) == 1 and len(_leftovers(tmp_path / "sub")) == 1
        raise RuntimeError("computation failed")
    assert all(path.read_bytes() == b"old" for path in paths.values())
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "sub") == []


def test_a_declared_output_not_written_stops_the_commit(tmp_path):
    out = tmp_path / "map.nii"
    out.write_bytes(b"old")
    with io.OutputPlan() as plan:
        plan.add("heatmap", out)
        plan.add("coverage", tmp_path / "cov.nii")
        plan.write("heatmap", [b"new"])
        with pytest.raises(RuntimeError, match=re.escape("not written: ['coverage']")):
            plan.commit()
        with pytest.raises(ValueError, match="'heatmap' is written twice"):
            plan.write("heatmap", [b"again"])
    assert out.read_bytes() == b"old" and _leftovers(tmp_path) == []


def test_a_commit_of_several_files_holds_the_folder_locks_and_journals_its_renames(
    tmp_path, monkeypatch
):
    paths = {
        "heatmap": tmp_path / "one" / "map.nii",
        "coverage": tmp_path / "two" / "cov.nii",
        "table": tmp_path / "one" / "table.tsv",
    }
    seen = []
    real_rename = writing.Temporary.rename

    def watching_rename(temporary):
        for folder in (tmp_path / "one", tmp_path / "two"):
            fd = os.open(folder, os.O_RDONLY)  # another open file: flock conflicts
            try:
                with pytest.raises(BlockingIOError):
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(fd)
            journals = [n for n in os.listdir(folder) if n.startswith(JOURNAL_PREFIX)]
            assert len(journals) == 1, folder
            content = json.loads((folder / journals[0]).read_text())
            assert sorted(final for _, final in content["renames"]) == sorted(
                str(p) for p in paths.values()
            )
            assert all(
                os.path.exists(temp) or os.path.exists(final) for temp, final in content["renames"]
            )
        seen.append(temporary.out_file)
        real_rename(temporary)

    monkeypatch.setattr(writing.Temporary, "rename", watching_rename)
    with io.OutputPlan() as plan:
        _declare(plan, paths)
        for role in paths:
            plan.write(role, [role.encode()])
        plan.commit()
    assert sorted(seen) == sorted(str(p) for p in paths.values())
    assert all(path.read_bytes() == role.encode() for role, path in paths.items())
    for folder in (tmp_path / "one", tmp_path / "two"):
        assert _leftovers(folder) == []
        fd = os.open(folder, os.O_RDONLY)  # released
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)


def test_a_commit_outside_a_with_block_leaves_no_descriptor_open(tmp_path):
    before = open_descriptors()
    plan = io.OutputPlan()
    for name in ("a.nii", "b.nii"):
        plan.add(name, tmp_path / name, nifti=False)
        plan.write(name, [b"x"])
    plan.commit()  # the temporaries' locks go with the commit, not with a with block
    assert open_descriptors() == before


def test_a_single_file_needs_no_lock_and_no_journal(tmp_path, monkeypatch):
    def no_lock(*args, **kwargs):
        raise AssertionError("a lock taken for one file")

    monkeypatch.setattr(plan_module, "locked", no_lock)
    monkeypatch.setattr(plan_module, "_write_journals", no_lock)
    assert io.write_atomic([b"one"], tmp_path / "a.nii") == str(tmp_path / "a.nii")
    assert (tmp_path / "a.nii").read_bytes() == b"one"


# -- an interrupted commit is completed by the next run -----------------------------------
_KILLED_COMMIT = """
import os, signal, sys
from nipype_heatmap.io import OutputPlan, writing
one, two = sys.argv[1:3]
real = writing.Temporary.rename
done = []
def rename(self):
    if done:  # killed between the first rename and the second
        os.kill(os.getpid(), signal.SIGKILL)
    real(self)
    done.append(self.out_file)
writing.Temporary.rename = rename
with OutputPlan() as plan:
    for role, path in (("heatmap", os.path.join(one, "map.nii")),
                       ("coverage", os.path.join(two, "cov.nii")),
                       ("table", os.path.join(one, "table.tsv"))):
        plan.add(role, path, nifti=False)
        plan.write(role, [b"new " + role.encode()])
    plan.commit()
"""


@pytest.mark.parametrize("recover_in", ["one", "two"])
def test_a_commit_killed_between_renames_is_completed_by_the_next_run(
    tmp_path, caplog, recover_in
):
    one, two = tmp_path / "one", tmp_path / "two"
    finals = {"heatmap": one / "map.nii", "coverage": two / "cov.nii", "table": one / "table.tsv"}
    for path in finals.values():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"old")
    done = subprocess.run([sys.executable, "-c", _KILLED_COMMIT, str(one), str(two)])
    assert done.returncode == -signal.SIGKILL
    # a mix on disk: the first rename happened, the others did not
    assert finals["heatmap"].read_bytes() == b"new heatmap"
    assert finals["coverage"].read_bytes() == b"old" and finals["table"].read_bytes() == b"old"
    assert any(JOURNAL_PREFIX in n for n in os.listdir(one))
    assert any(JOURNAL_PREFIX in n for n in os.listdir(two))
    with caplog.at_level(logging.WARNING, logger="nipype_heatmap"):
        with io.OutputPlan() as plan:  # another run, writing anything into either folder
            plan.add("other", tmp_path / recover_in / "other.nii")
    for role, path in finals.items():
        assert path.read_bytes() == b"new " + role.encode(), role
    assert _leftovers(one) == [] and _leftovers(two) == []
    assert "Completed an earlier run's interrupted write of 2 file(s)" in caplog.text
    assert str(finals["coverage"]) in caplog.text and str(finals["table"]) in caplog.text


def test_ctrl_c_between_renames_says_what_is_in_place_and_what_to_do(tmp_path, monkeypatch):
    # An interrupt there is still an interrupt (KeyboardInterrupt), but not one after which
    # "no output was written": it names the folders, keeps the rest with the journal, and
    # says to run again.
    one, two = tmp_path / "one", tmp_path / "two"
    finals = {"heatmap": one / "map.nii", "coverage": two / "cov.nii"}
    with monkeypatch.context() as patch:
        renamed = stop_after_the_first_rename(patch)
        with io.OutputPlan() as plan:
            for role, path in finals.items():
                plan.add(role, path, nifti=False)
                plan.write(role, [role.encode()])
            with pytest.raises(io.CommitInterrupted) as caught:
                plan.commit()
            assert not plan.committed
    assert isinstance(caught.value, KeyboardInterrupt)
    message = str(caught.value)
    assert message.startswith(f"{one}, {two}: interrupted while replacing the outputs")
    assert message.endswith("completes the set: run the command again")
    assert renamed == [str(finals["heatmap"])]
    journals = [two / n for n in os.listdir(two) if n.startswith(JOURNAL_PREFIX)]
    assert len(journals) == 1  # the rest, for the next run: readable as the outputs are
    assert stat.S_IMODE(journals[0].stat().st_mode) == 0o644 & ~current_umask()
    with io.OutputPlan() as plan:
        plan.add("other", two / "other.nii", nifti=False)
    assert finals["coverage"].read_bytes() == b"coverage"


def _hand_made_journal(folder, finals, *, name="abc"):
    """Temporary files and a journal, as a commit killed before its first rename leaves."""
    renames = []
    for final in finals:
        temp = final.parent / f".{final.name}.{name}.part"
        temp.write_bytes(b"new " + final.name.encode())
        renames.append([str(temp), str(final)])
    journal = folder / f"{JOURNAL_PREFIX}{name}.json"
    journal.write_text(json.dumps({"renames": renames, "journals": [str(journal)]}))
    return journal


def test_a_hand_made_journal_is_completed_when_an_output_is_declared_there(tmp_path, caplog):
    finals = [tmp_path / "map.nii", tmp_path / "cov.nii"]
    finals[0].write_bytes(b"old")
    _hand_made_journal(tmp_path, finals)
    with caplog.at_level(logging.WARNING, logger="nipype_heatmap"):
        with io.OutputPlan() as plan:
            plan.add("other", tmp_path / "other.nii")
    assert [f.read_bytes() for f in finals] == [b"new map.nii", b"new cov.nii"]
    assert _leftovers(tmp_path) == []
    assert "interrupted write of 2 file(s)" in caplog.text


def test_recover_interrupted_commits_returns_what_it_put_in_place(tmp_path):
    finals = [tmp_path / "map.nii", tmp_path / "cov.nii"]
    _hand_made_journal(tmp_path, finals)
    before = open_descriptors()  # probing each temporary's lock leaves nothing open
    assert io.recover_interrupted_commits(tmp_path) == [str(f) for f in finals]
    assert open_descriptors() == before
    assert io.recover_interrupted_commits(tmp_path) == []
    assert io.recover_interrupted_commits(tmp_path / "missing") == []


@pytest.mark.parametrize("content", ["not json", '{"renames": 3}', '{"journals": []}', ""])
def test_an_unreadable_journal_is_left_alone_with_a_warning(tmp_path, caplog, content):
    journal = tmp_path / f"{JOURNAL_PREFIX}bad.json"
    journal.write_text(content)
    temp = tmp_path / ".map.nii.bad.part"
    with caplog.at_level(logging.WARNING, logger="nipype_heatmap"):
        with io.OutputPlan() as plan:
            plan.add("heatmap", tmp_path / "x.nii")
    assert journal.read_text() == content
    assert f"{journal}: unreadable commit journal left alone" in caplog.text
    assert not temp.exists()


def test_a_journal_s_temporary_held_by_a_live_writer_is_not_touched(tmp_path, caplog):
    finals = [tmp_path / "map.nii", tmp_path / "cov.nii"]
    for final in finals:
        final.write_bytes(b"old")
    journal = _hand_made_journal(tmp_path, finals)
    held = tmp_path / ".map.nii.abc.part"
    fd = os.open(held, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a running writer holds it
    try:
        with caplog.at_level(logging.WARNING, logger="nipype_heatmap"):
            io.recover_interrupted_commits(tmp_path)
        assert held.read_bytes() == b"new map.nii"
        assert finals[0].read_bytes() == b"old"
        # the journal stays, or the set would stay a mix once the holder is gone
        assert journal.exists()
        assert f"{journal}: interrupted write left for a later run" in caplog.text
    finally:
        os.close(fd)
    # once the holder is gone, the next run completes the set
    assert io.recover_interrupted_commits(tmp_path) == [str(finals[0])]
    assert [f.read_bytes() for f in finals] == [b"new map.nii", b"new cov.nii"]
    assert _leftovers(tmp_path) == []


def test_write_atomic_is_a_plan_of_one_file(tmp_path):
    out = tmp_path / "sub" / "file.json.gz"
    assert io.write_atomic([b'{"a": ', b"1}"], out) == str(out)
    assert gzip.decompress(out.read_bytes()) == b'{"a": 1}'
    assert io.write_atomic([b"plain"], tmp_path / "x.nii") == str(tmp_path / "x.nii")
    assert (tmp_path / "x.nii").read_bytes() == b"plain"
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "sub") == []


# -- locks -----------------------------------------------------------------------------------
_HOLDER = """
import os, sys, time
from nipype_heatmap.io import locked
with locked(sys.argv[1], what="the test's state"):
    open(sys.argv[2], "w").close()
    while not os.path.exists(sys.argv[3]):
        time.sleep(0.02)
"""


class _Holder:
    """A child process holding a lock until told to let go (or killed)."""

    def __init__(self, tmp_path, lock):
        self.ready, self.go = tmp_path / "ready", tmp_path / "go"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, str(lock), str(self.ready), str(self.go)]
        )
        deadline = time.monotonic() + 60
        while not self.ready.exists():
            assert self.proc.poll() is None, "the holder died"
            assert time.monotonic() < deadline, "the holder never took the lock"
            time.sleep(0.02)

    def release(self):
        self.go.touch()
        assert self.proc.wait(timeout=60) == 0

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_a_lock_held_by_another_process_times_out_naming_its_holder(tmp_path):
    lock = tmp_path / "state.nii.gz.lock"
    holder = _Holder(tmp_path, lock)
    try:
        start = time.monotonic()
        with pytest.raises(io.LockTimeout) as info, io.locked(lock, what="the state", timeout=0.3):
            pass
        assert 0.3 <= time.monotonic() - start < 5
        message = str(info.value)
        assert str(lock) in message and "the state is locked by another run" in message
        assert f"pid {holder.proc.pid} on " in message
        assert info.value.errno == errno.EAGAIN
    finally:
        holder.close()


def test_a_waiting_process_gets_the_lock_when_the_holder_lets_go(tmp_path):
    lock = tmp_path / "state.nii.gz.lock"
    holder = _Holder(tmp_path, lock)
    try:
        threading.Timer(0.3, holder.go.touch).start()
        start = time.monotonic()
        with io.locked(lock, what="the state", timeout=30):
            assert time.monotonic() - start >= 0.25
            assert lock.read_text() == f"pid {os.getpid()} on {os.uname().nodename}\n"
        assert holder.proc.wait(timeout=60) == 0
    finally:
        holder.close()


def test_a_killed_holder_releases_the_lock(tmp_path):
    lock = tmp_path / "state.nii.gz.lock"
    holder = _Holder(tmp_path, lock)
    try:
        holder.kill()
        start = time.monotonic()
        with io.locked(lock, what="the state", timeout=0):
            assert time.monotonic() - start < 1
    finally:
        holder.close()
    assert lock.exists()  # the lock file stays (see the module doc)


def test_a_lock_is_re_entrant_in_one_thread(tmp_path):
    lock = tmp_path / "x.lock"
    with io.locked(lock, what="x", timeout=0):
        with io.locked(lock, what="x", timeout=0):
            fd = os.open(lock, os.O_RDONLY)
            try:
                with pytest.raises(BlockingIOError):  # still held after the inner block
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(fd)
        fd = os.open(lock, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):  # the outer block still holds it
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released at the end
    finally:
        os.close(fd)


def test_another_thread_of_the_process_waits(tmp_path):
    lock = tmp_path / "x.lock"
    outcome = {}

    def other(timeout):
        try:
            with io.locked(lock, what="x", timeout=timeout):
                outcome["got"] = time.monotonic()
        except io.LockTimeout as err:
            outcome["error"] = err

    with io.locked(lock, what="x"):
        thread = threading.Thread(target=other, args=(0.2,))
        thread.start()
        thread.join(10)
        assert "got" not in outcome
        assert "locked by another thread of this process" in str(outcome["error"])
        thread = threading.Thread(target=other, args=(30,))
        thread.start()
        time.sleep(0.2)
        assert "got" not in outcome  # waiting
        released = time.monotonic()
    thread.join(10)
    assert outcome["got"] >= released


def test_a_folder_is_locked_through_the_folder_itself(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    with io.locked(folder, what="the output folder"):
        fd = os.open(folder, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    assert os.listdir(folder) == []  # no lock file


def test_a_folder_that_cannot_be_flocked_falls_back_to_a_lock_file(tmp_path, monkeypatch):
    folder = tmp_path / "out"
    folder.mkdir()
    real_flock = fcntl.flock

    def nfs_like_flock(fd, operation):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return real_flock(fd, operation)

    monkeypatch.setattr(locking.fcntl, "flock", nfs_like_flock)
    lock_file = folder / locking.FOLDER_LOCK_NAME
    with io.locked(folder, what="the output folder"):
        assert lock_file.read_text() == f"pid {os.getpid()} on {os.uname().nodename}\n"
        fd = os.open(lock_file, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                real_flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    fd = os.open(lock_file, os.O_RDONLY)
    try:
        real_flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released
    finally:
        os.close(fd)


def test_a_lock_file_that_cannot_be_created_is_an_os_error_naming_it(tmp_path):
    lock = tmp_path / "missing_folder" / "state.lock"
    with pytest.raises(OSError, match=re.escape(f"{lock}: cannot create the lock file")):
        with io.locked(lock, what="the state"):
            pass


def test_a_commit_waits_for_a_folder_locked_by_another_run(tmp_path, monkeypatch):
    folder = tmp_path / "out"
    folder.mkdir()
    holder = _Holder(tmp_path, folder)
    try:
        monkeypatch.setattr(
            plan_module,
            "locked",
            lambda path, what: locking.locked(path, what=what, timeout=0.3),
        )
        with io.OutputPlan() as plan:
            _declare(plan, {"a": folder / "a.nii", "b": folder / "b.nii"})
            plan.write("a", [b"a"])
            plan.write("b", [b"b"])
            with pytest.raises(io.LockTimeout, match=re.escape(f"{folder}: the output folder")):
                plan.commit()
        assert os.listdir(folder) == []  # nothing renamed, no journal
    finally:
        holder.close()


def test_locks_leave_no_descriptor_open(tmp_path):
    lock = tmp_path / "x.lock"
    with io.locked(lock, what="x"):
        pass
    before = open_descriptors()
    for _ in range(3):
        with io.locked(lock, what="x"), io.locked(tmp_path, what="folder"):
            pass
        with pytest.raises(OSError), io.locked(tmp_path / "no" / "x.lock", what="x"):
            pass
    assert open_descriptors() == before


@pytest.mark.parametrize("outputs", [1, 2])
def test_a_folder_made_at_an_output_path_while_writing_stops_the_commit_first(tmp_path, outputs):
    # Between planning and the commit something makes a folder where an output goes: the
    # commit says so, naming it, before any rename (the other outputs keep their files).
    paths = {"heatmap": tmp_path / "map.nii", "table": tmp_path / "table.tsv"}
    paths = dict(list(paths.items())[:outputs])
    for path in paths.values():
        path.write_bytes(b"old")
    with io.OutputPlan() as plan:
        _declare(plan, paths)
        for role in paths:
            plan.write(role, [b"new"])
        last = list(paths.values())[-1]
        last.unlink()
        last.mkdir()
        with pytest.raises(IsADirectoryError, match=re.escape(f"{last}: output path is now")):
            plan.commit()
    assert [p.read_bytes() for p in paths.values() if p != last] == [b"old"] * (outputs - 1)
    assert _leftovers(tmp_path) == []
