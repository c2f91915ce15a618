"""Writing: atomic, named errors, no temporary file that outlives its process, checks first."""

from __future__ import annotations

import errno
import fcntl
import gzip
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time

import nibabel as nb
import numpy as np
import pytest
from isal import isal_zlib

from nipype_heatmap import io
from nipype_heatmap.api import generate_heatmap_volume, write_heatmap
from nipype_heatmap.io import writing

from .conftest import file_digest, no_worker_thread_left, open_descriptors, run_unprivileged


def _members(data: bytes) -> int:
    """How many gzip members ``data`` holds (each checked by ISA-L)."""
    count = 0
    while data:
        stream = isal_zlib.decompressobj(31)
        stream.decompress(data)
        assert stream.eof, "a truncated member"
        data = stream.unused_data
        count += 1
    return count


def test_gzip_output_is_reproducible(tmp_path):
    payload = os.urandom(1000) * 50
    first = io.write_atomic([payload[:7], memoryview(payload)[7:]], tmp_path / "a.bin.gz")
    data = open(first, "rb").read()
    assert gzip.decompress(data) == payload
    assert data[4:8] == b"\0\0\0\0"  # mtime 0: the same map gives the same bytes
    second = io.write_atomic([payload], tmp_path / "b.bin.gz")
    assert open(second, "rb").read() == data
    assert sorted(os.listdir(tmp_path)) == ["a.bin.gz", "b.bin.gz"]


@pytest.mark.parametrize("block", [None, 1000], ids=["default_blocks", "small_blocks"])
def test_gzip_output_is_one_member_whatever_the_cuts(tmp_path, monkeypatch, block):
    # The compressor's output depends on how its input is cut: the same content must give
    # the same bytes however the writer cut it (a map through image_chunks or to_bytes).
    if block is not None:  # blocks of 1000 bytes: the cuts below fall inside and across
        monkeypatch.setattr(writing, "GZIP_BLOCK", block)
    payload = bytes(range(256)) * 40 + os.urandom(3000) + b"\0" * 5000  # 18,240 bytes
    cuts = {
        "whole": [payload],
        "views": [memoryview(payload)[:2500], memoryview(payload)[2500:]],
        "small": [payload[i : i + 300] for i in range(0, len(payload), 300)],
        "mixed": [payload[:10], memoryview(payload)[10:12010], payload[12010:]],
        "with_empty_chunks": [b"", payload[:5], b"", payload[5:], b""],
        "bytearrays": [bytearray(payload[:999]), bytearray(payload[999:2001]), payload[2001:]],
        "array_views": [memoryview(np.frombuffer(payload, np.uint16).reshape(-1, 5))],
    }
    reference = None
    for name, chunks in cuts.items():
        out = io.write_atomic(chunks, tmp_path / f"{name}.bin.gz")
        data = open(out, "rb").read()
        assert gzip.decompress(data) == payload, name
        assert _members(data) == 1, name
        reference = reference or data
        assert data == reference, f"{name}: other bytes for the same content"


def test_gzip_output_is_compressed_on_the_calling_thread(tmp_path):
    # One ISA-L stream, no compression threads (the threaded blocks are gone).
    with no_worker_thread_left():
        io.write_atomic([os.urandom(200_000)], tmp_path / "out.bin.gz")


@pytest.mark.parametrize("block", [None, 1000], ids=["default_blocks", "small_blocks"])
def test_gzip_chunks_are_compressed_before_a_reused_buffer_changes(tmp_path, monkeypatch, block):
    # a writer may fill one buffer again for each chunk (the sparse atlas does): with
    # blocks smaller than a chunk, views of it are compressed before the next is asked for
    if block is not None:
        monkeypatch.setattr(writing, "GZIP_BLOCK", block)
    buffer = bytearray(2500)

    def chunks():
        for value in range(1, 6):
            buffer[:] = bytes([value]) * 2400 + os.urandom(100)
            yield memoryview(buffer)

    expected = []

    def recorded():
        for chunk in chunks():
            expected.append(bytes(chunk))
            yield chunk

    out = io.write_atomic(recorded(), tmp_path / "reused.bin.gz")
    assert gzip.decompress(open(out, "rb").read()) == b"".join(expected)


def test_a_failing_write_leaves_the_old_file_and_no_temporary(tmp_path):
    out = tmp_path / "out.bin.gz"
    out.write_bytes(b"old")

    def chunks():
        yield os.urandom(5000)
        raise OSError(errno.EIO, "the source went away")

    with no_worker_thread_left(), pytest.raises(OSError, match="went away"):
        io.write_atomic(chunks(), out)
    assert out.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin.gz"]


def test_a_full_disk_during_a_write_names_the_output_and_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "out.bin.gz"
    real_fdopen = writing.os.fdopen

    class Full:  # the disk fills up after the first few writes
        def __init__(self, fobj):
            self.fobj, self.calls = fobj, 0

        def write(self, data):
            self.calls += 1
            if self.calls > 1:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self.fobj.write(data)

        def flush(self):
            return self.fobj.flush()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.fobj.__exit__(*exc)

    monkeypatch.setattr(writing.os, "fdopen", lambda *a, **k: Full(real_fdopen(*a, **k)))
    chunks = [os.urandom(1 << 20) for _ in range(3)]  # three blocks: three writes
    with pytest.raises(OSError, match=re.escape(str(out)) + ".*No space") as info:
        io.write_atomic(chunks, out)
    assert info.value.errno == errno.ENOSPC and not out.exists()
    assert os.listdir(tmp_path) == []


def test_an_empty_gzip_output_is_valid(tmp_path):
    out = io.write_atomic([], tmp_path / "empty.gz")
    assert gzip.decompress(open(out, "rb").read()) == b""


def test_write_replaces_an_existing_file_only_when_complete(tmp_path):
    out = tmp_path / "out.nii"
    out.write_bytes(b"old map")

    def chunks():
        yield b"new "
        assert out.read_bytes() == b"old map", "the old file changed before the write ended"
        yield b"map"

    io.write_atomic(chunks(), out)
    assert out.read_bytes() == b"new map"


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EIO])
def test_write_failure_names_the_output_and_keeps_the_old_one(
    make_nifti, in_dir, tmp_path, monkeypatch, code
):
    make_nifti("a.nii.gz")
    out = generate_heatmap_volume(in_dir, tmp_path / "out")
    before = file_digest(out)

    def failing_fsync(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(writing.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match=re.escape(out)) as info:
        generate_heatmap_volume(in_dir, tmp_path / "out")
    assert info.value.errno == code
    assert os.strerror(code) in str(info.value)
    assert file_digest(out) == before
    assert os.listdir(tmp_path / "out") == ["heatmap_volume.nii.gz"]


def test_file_size_limit_names_the_output(make_nifti, in_dir, tmp_path):
    """A real EFBIG from the kernel (RLIMIT_FSIZE), in a child process."""
    make_nifti("a.nii.gz")
    out_dir = tmp_path / "out"
    code = textwrap.dedent(
        f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))
        from nipype_heatmap.api import generate_heatmap_volume
        try:
            generate_heatmap_volume({str(in_dir)!r}, {str(out_dir)!r}, "big.nii")
        except OSError as err:
            print("ERRNO", err.errno, err)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert f"ERRNO {errno.EFBIG}" in done.stdout, done.stdout + done.stderr
    assert str(out_dir / "big.nii") in done.stdout
    assert os.listdir(out_dir) == []


_SLOW_WRITER = """
import sys, time
from nipype_heatmap.io import write_atomic
def chunks():
    yield b"x" * 4096
    open(sys.argv[2], "w").close()  # tell the parent we are writing
    time.sleep(60)
    yield b"never"
write_atomic(chunks(), sys.argv[1])
"""


def _kill_while_writing(out, ready):
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(out), str(ready)])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, "the writer died before writing"
            assert time.monotonic() < deadline, "the writer never started writing"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()


def test_a_killed_writer_leaves_the_old_file_and_its_temporary_goes_with_the_next_run(
    tmp_path,
):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "map.nii"
    out.write_bytes(b"previous map")
    _kill_while_writing(out, tmp_path / "ready")
    assert out.read_bytes() == b"previous map"
    leftovers = sorted(set(os.listdir(out_dir)) - {"map.nii"})
    assert len(leftovers) == 1  # a named temporary file stays ...
    assert re.fullmatch(r"\.map\.nii\..+\.part", leftovers[0]), leftovers
    with io.OutputPlan() as plan:  # ... until the next run of this output removes it
        plan.add("map", out)
    assert os.listdir(out_dir) == ["map.nii"]
    assert out.read_bytes() == b"previous map"


def test_a_running_writer_s_temporary_file_is_never_removed(tmp_path):
    out = tmp_path / "map.nii.gz"
    live = tmp_path / ".map.nii.gz.abc123.part"
    stale = tmp_path / ".map.nii.gz.def456.part"
    other = tmp_path / ".other.nii.gz.abc123.part"
    for path in (live, stale, other):
        path.write_bytes(b"partial")
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a running writer holds it
    try:
        removed = writing.remove_stale_temporaries(out)
    finally:
        os.close(fd)
    assert removed == [str(stale)]
    assert live.exists() and other.exists() and not stale.exists()


def test_declaring_an_output_leaves_no_probe_file(tmp_path):
    with io.OutputPlan() as plan:
        plan.add("heatmap", tmp_path / "out.nii.gz")
    assert os.listdir(tmp_path) == []


# -- checks before any input is read ----------------------------------------------------
@pytest.fixture
def no_reading(monkeypatch):
    """Fail the test if any input file is read (headers included)."""
    from nipype_heatmap.io import reading

    def must_not_read(path):
        raise AssertionError(f"input {path} was read before the output was checked")

    monkeypatch.setattr(reading, "_open_regular_file", must_not_read)


def test_output_under_a_regular_file_fails_before_reading(
    make_nifti, in_dir, tmp_path, no_reading
):
    make_nifti("a.nii.gz")
    blocker = tmp_path / "a_file"
    blocker.write_text("a regular file where a folder is expected")
    with pytest.raises(OSError, match=re.escape(str(blocker))):
        generate_heatmap_volume(in_dir, blocker / "derivatives")


def test_output_that_is_a_folder_fails_before_reading(make_nifti, in_dir, tmp_path, no_reading):
    make_nifti("a.nii.gz")
    (tmp_path / "out" / "heatmap_volume.nii.gz").mkdir(parents=True)
    with pytest.raises(IsADirectoryError, match="heatmap_volume.nii.gz"):
        generate_heatmap_volume(in_dir, tmp_path / "out")
    with pytest.raises(IsADirectoryError, match="heatmap_volume.nii.gz"):
        write_heatmap([in_dir / "a.nii.gz"], tmp_path / "out" / "heatmap_volume.nii.gz")


def test_read_only_output_folder_fails_before_reading_as_an_unprivileged_user():
    """Permissions do not stop root, and CI runs as root: run this as 'nobody'."""
    result = run_unprivileged(
        """
        import os, numpy as np, nibabel as nb
        from nipype_heatmap import api
        from nipype_heatmap.io import reading
        inputs = os.path.join(WORK, "inputs")
        os.mkdir(inputs)
        for i in range(2):
            nb.Nifti1Image(np.ones((7, 8, 9), np.uint8), np.eye(4)).to_filename(
                os.path.join(inputs, f"m{i}.nii.gz"))
        read = []
        real = reading._open_regular_file
        reading._open_regular_file = lambda p: read.append(p) or real(p)
        out = os.path.join(WORK, "readonly")
        os.mkdir(out)
        os.chmod(out, 0o555)
        for call in (lambda: api.generate_heatmap_volume(inputs, out),
                     lambda: api.write_heatmap([os.path.join(inputs, "m0.nii.gz")],
                                               os.path.join(out, "x.nii.gz"))):
            try:
                call()
            except PermissionError as err:
                print("PermissionError:", err)
        print("READ:", read)
        print("LISTING:", os.listdir(out))
        """
    )
    lines = result.splitlines()
    errors = [line for line in lines if line.startswith("PermissionError:")]
    assert len(errors) == 2, result
    assert all("readonly" in line and "not writable" in line for line in errors), result
    assert "READ: []" in lines, result
    assert "LISTING: []" in lines, result


def test_write_heatmap_refuses_a_non_nifti_name_before_reading(make_nifti, tmp_path, no_reading):
    a = make_nifti("a.nii.gz")
    for name in ("out.mgz", "out.txt", ".hidden.nii.gz"):
        with pytest.raises(ValueError, match=re.escape(name)):
            write_heatmap([a], tmp_path / name)
    assert not list(tmp_path.glob("out*"))


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("sub/out.nii.gz", "bare file name"),
        ("../out.nii.gz", "bare file name"),
        ("..", "bare file name"),
        (".", "bare file name"),
        ("", "bare file name"),
        (".out.nii.gz", "must not start with '.'"),
        ("out.nii.gz.bak", "must end in .nii or .nii.gz"),
        ("out.NII.GZ", "must end in .nii or .nii.gz"),
        (".nii.gz", "must not start with '.'"),
        ("out.gz", "must end in .nii or .nii.gz"),
    ],
)
def test_output_names_must_be_bare_nifti_names(
    make_nifti, in_dir, tmp_path, no_reading, name, reason
):
    with pytest.raises(ValueError, match=re.escape(repr(name)) + ".*" + re.escape(reason)):
        io.check_output_filename(name)
    make_nifti("a.nii.gz")
    with pytest.raises(ValueError, match=re.escape(reason)):
        generate_heatmap_volume(in_dir, tmp_path / "out", name)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["heatmap.nii.gz", "heatmap.nii", "a.b.nii", "sub-01 map.nii.gz"])
def test_bare_nifti_names_are_accepted(name):
    assert io.check_output_filename(name) == name


def test_the_umask_is_applied_and_left_as_it_was(tmp_path):
    old = os.umask(0o027)
    try:
        out = io.write_atomic([b"x"], tmp_path / "m.nii")
        assert os.umask(0o027) == 0o027  # still the caller's umask
        assert os.stat(out).st_mode & 0o777 == 0o640
        os.umask(0o002)
        out = io.write_atomic([b"x"], tmp_path / "m.nii")  # replacing takes the new umask
        assert os.stat(out).st_mode & 0o777 == 0o664
    finally:
        os.umask(old)


def test_a_cleaner_running_during_a_write_leaves_it_alone(tmp_path):
    """The writer holds its lock: a second run's clean-up must not remove its temporary
    file, and the write completes."""
    out = tmp_path / "map.nii"
    ready = tmp_path / "ready"
    go = tmp_path / "go"
    code = textwrap.dedent(
        f"""
        import os, time
        from nipype_heatmap.io import write_atomic
        def chunks():
            yield b"first half "
            open({str(ready)!r}, "w").close()
            while not os.path.exists({str(go)!r}):
                time.sleep(0.02)
            yield b"second half"
        write_atomic(chunks(), {str(out)!r})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        assert writing.remove_stale_temporaries(out) == []
        with io.OutputPlan() as plan:  # another run declaring the same output
            plan.add("map", out)
        go.touch()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert out.read_bytes() == b"first half second half"


# Gaps found by the mutation run of io/writing.py (tools/mutate.py).


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd (Linux)")
def test_writes_and_clean_ups_leave_no_file_descriptor_open(tmp_path):
    # A long-lived process (a Nipype worker writing thousands of maps) must not run out
    # of descriptors (mutants: each os.close removed).
    out = tmp_path / "map.nii.gz"
    stale = tmp_path / ".map.nii.gz.def456.part"
    io.write_atomic([b"warm-up"], out)  # imports and lazy set-up happen before counting
    before = open_descriptors()
    for _ in range(3):
        stale.write_bytes(b"left by a killed run")
        assert writing.remove_stale_temporaries(out) == [str(stale)]
        io.write_atomic([b"a map"], out)
        with io.OutputPlan() as plan:  # several files: folder locks and a journal
            plan.add("a", tmp_path / "a.nii")
            plan.add("b", tmp_path / "sub" / "b.nii")
            plan.write("a", [b"a"])
            plan.write("b", [b"b"])
            plan.commit()
        with io.OutputPlan() as plan:  # a failed run
            plan.add("a", tmp_path / "a.nii")
            plan.write("a", [b"never committed"])
    assert open_descriptors() == before


def test_everything_is_on_disk_before_the_rename_and_the_rename_is_made_durable(
    tmp_path, monkeypatch
):
    # What fsync sees must be the whole file (mutant: the buffer flushed only after the
    # fsync), and after the rename the folder itself is synced (mutants: the folder's
    # fsync removed), or a power cut can leave the old name or an empty file.
    out = tmp_path / "map.nii"
    payload = os.urandom(200_000)
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        info = os.fstat(fd)
        synced.append(("folder" if stat.S_ISDIR(info.st_mode) else "file", info.st_size))
        real_fsync(fd)

    real_replace = os.replace

    def recording_replace(src, dst):
        synced.append(("rename", None))
        real_replace(src, dst)

    monkeypatch.setattr(writing.os, "fsync", recording_fsync)
    monkeypatch.setattr(writing.os, "replace", recording_replace)
    io.write_atomic([payload[:-100], payload[-100:]], out)  # the last bytes sit in a buffer
    kinds = [kind for kind, _ in synced]
    assert kinds[:2] == ["file", "rename"] and "folder" in kinds[2:]
    assert synced[0][1] == len(payload)


def test_a_cleaner_running_just_before_the_rename_leaves_the_temporary_alone(
    tmp_path, monkeypatch
):
    # Until the rename, the writer's lock is what keeps a concurrent clean-up (another
    # run of this output) from removing its temporary file (mutant: the file not locked).
    out = tmp_path / "map.nii"
    real_replace = os.replace
    cleaned = []

    def clean_then_replace(src, dst):
        cleaned.extend(writing.remove_stale_temporaries(out))
        real_replace(src, dst)

    monkeypatch.setattr(writing.os, "replace", clean_then_replace)
    io.write_atomic([b"the map"], out)
    assert cleaned == []
    assert out.read_bytes() == b"the map"


def _image_for_chunks(klass, dtype, rng, *, order="F", endianness="<"):
    dtype = np.dtype(dtype).newbyteorder(endianness)
    data = (rng.random((5, 6, 7)) * 100).astype(dtype)
    if np.dtype(dtype).kind == "f":
        data[0, 0, 0], data[1, 1, 1] = np.nan, -np.inf
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-90, 3, 7]
    header = klass.header_class(endianness=endianness)
    header.set_data_dtype(dtype)
    header.set_qform(affine, code=1)
    header["descrip"] = b"first input"
    header["vox_offset"] = 1024  # an input's offset: the image resets it
    header.extensions.append(nb.nifti1.Nifti1Extension(6, b"a comment"))
    data = np.asfortranarray(data) if order == "F" else np.ascontiguousarray(data)
    return klass(data, affine, header)


@pytest.mark.parametrize("endianness", ["<", ">"])  # a big-endian first input's header
@pytest.mark.parametrize("klass", [nb.Nifti1Image, nb.Nifti2Image])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8, np.int16, np.uint16])
def test_image_chunks_are_the_bytes_nibabel_writes_without_copying_the_voxels(
    klass, dtype, endianness
):
    img, twin = (
        _image_for_chunks(klass, dtype, np.random.default_rng(3), endianness=endianness)
        for _ in range(2)
    )
    for image in (img, twin):  # changed since: nibabel writes the image's affine
        image.header.set_sform(np.eye(4), code=2)
    chunks = writing.image_chunks(img)
    assert len(chunks) == 2 and isinstance(chunks[1], memoryview)  # the array's memory
    assert np.shares_memory(np.frombuffer(chunks[1], np.uint8), np.asarray(img.dataobj))
    assert b"".join(bytes(c) for c in chunks) == twin.to_bytes()
    assert img.header.binaryblock == twin.header.binaryblock  # left as to_bytes leaves it


@pytest.mark.parametrize(
    "change",
    ["c_order", "byte_swapped", "converted_on_write", "scaled_on_write", "header_scaling"],
)
def test_image_chunks_leave_anything_else_to_nibabel_with_the_same_bytes(change):
    order = "C" if change == "c_order" else "F"
    img = _image_for_chunks(nb.Nifti1Image, np.float32, np.random.default_rng(4), order=order)
    if change == "byte_swapped":
        data = np.asarray(img.dataobj).astype(">f4", order="F")
        img = nb.Nifti1Image(data, img.affine, img.header)
    elif change == "converted_on_write":  # float32 voxels, float64 on disk
        img.header.set_data_dtype(np.float64)
    elif change == "scaled_on_write":  # floats into int16: nibabel chooses a scaling
        img.header.set_data_dtype(np.int16)
        values = np.nan_to_num(np.asarray(img.dataobj), neginf=0)
        img = nb.Nifti1Image(values, img.affine, img.header)
    elif change == "header_scaling":  # a scaling set on the image is kept by nibabel
        img.header.set_slope_inter(2.0, 1.0)
    chunks = writing.image_chunks(img)
    assert len(chunks) == 1
    assert chunks[0] == img.to_bytes()


def test_image_chunks_leave_other_formats_to_nibabel():
    data = np.asfortranarray(np.arange(24, dtype=">f4").reshape(2, 3, 4))  # MGH's order
    img = nb.MGHImage(data, np.eye(4))  # single-file, no NIfTI scaling fields
    assert writing.image_chunks(img) == [img.to_bytes()]
