"""The one read path: regular files only, gzip by content, bounded and verified; one
validated header step; read-ahead."""

from __future__ import annotations

import gzip
import itertools
import os
import re
import socket
import threading
import time
import tracemalloc
import zlib

import nibabel as nb
import numpy as np
import pytest
from numpy.testing import assert_array_equal

from benchmarks.reference_loop import reference_heatmap
from nipype_heatmap import io
from nipype_heatmap.accumulate.values import values_on_grid
from nipype_heatmap.api import compute_heatmap
from nipype_heatmap.io import inflating, reading

from .conftest import SHAPE, default_affine, no_worker_thread_left

DTYPES = ["uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "float32", "float64"]


def _random(rng, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return (rng.standard_normal(SHAPE) * 10).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -1000), min(info.max, 1000), SHAPE).astype(dtype)


def _write(path, data, *, slope=None, inter=None, big_endian=False, nifti2=False):
    klass = nb.Nifti2Image if nifti2 else nb.Nifti1Image
    img = klass(data, default_affine(), dtype=data.dtype)
    if big_endian:
        header = img.header.as_byteswapped(">")
        img = klass(data, default_affine(), header)
    img.header.set_data_dtype(data.dtype)
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    img.to_filename(path)
    return path


def _bits(array):
    return np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)


# -- the same values as nibabel, on every kind of file -----------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scaled", [False, True], ids=["raw", "scaled"])
def test_read_equals_nibabel(tmp_path, rng, dtype, scaled):
    data = _random(rng, dtype)
    slope, inter = (0.37, -2.5) if scaled else (None, None)
    path = _write(tmp_path / "a.nii.gz", data, slope=slope, inter=inter)
    volume = io.read_volume(path)
    img = nb.load(path)
    assert volume.data.dtype == img.get_data_dtype()
    assert_array_equal(volume.data, np.asanyarray(img.dataobj.get_unscaled()))
    expected = (None, None) if not scaled else (img.dataobj.slope, img.dataobj.inter)
    assert (volume.slope, volume.inter) == expected
    assert_array_equal(volume.affine, img.affine)
    assert volume.image_class is nb.Nifti1Image


@pytest.mark.parametrize(
    "case",
    [
        "uncompressed",
        "big_endian",
        "nifti2",
        "multi_member",
        "multi_member_equal_halves",
        "extension",
        "nifti2_extension",
        "4d_t1",
    ],
)
def test_unusual_files_read_like_nibabel(tmp_path, rng, case):
    data = _random(rng, "int16")
    path = tmp_path / ("a.nii" if case == "uncompressed" else "a.nii.gz")
    if case == "big_endian":
        _write(path, data, slope=0.5, inter=1.0, big_endian=True)
    elif case == "nifti2":
        _write(path, data, nifti2=True)
    elif case == "4d_t1":
        _write(path, data[..., None])
    elif case in ("extension", "nifti2_extension"):
        klass = nb.Nifti2Image if case == "nifti2_extension" else nb.Nifti1Image
        img = klass(data, default_affine())
        img.header.extensions.append(nb.nifti1.Nifti1Extension(6, b"an AFNI-like comment"))
        img.to_filename(path)
    elif case == "multi_member":
        raw = nb.Nifti1Image(data, default_affine()).to_bytes()
        path.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    elif case == "multi_member_equal_halves":
        # The last member's length (the file's trailer) equals the first's: a reader that
        # trusted the trailer would inflate half of the file.
        raw = nb.Nifti1Image(data, default_affine()).to_bytes()
        half = len(raw) // 2
        assert len(raw) == 2 * half
        path.write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:]))
    else:
        _write(path, data)
    volume = io.read_volume(path)
    assert volume.data.dtype.isnative
    assert_array_equal(volume.data, nb.load(path).dataobj.get_unscaled().reshape(SHAPE))
    # Extensions are read from where the header says the voxels start (vox_offset).
    expected = [e.get_content() for e in nb.load(path).header.extensions]
    assert [e.get_content() for e in volume.header.extensions] == expected
    assert ("extension" in case) == (expected == [b"an AFNI-like comment"])
    assert_array_equal(volume.affine, nb.load(path).affine)
    assert volume.image_class is type(nb.load(path))
    if case == "big_endian":  # the scaling of a big-endian header, as nibabel reads it
        assert (volume.slope, volume.inter) == (0.5, 1.0)


# -- gzip is decided by content and always verified (issue: name-case bypass) ----------
@pytest.mark.parametrize("name", ["a.nii.gz", "a.NII.GZ", "a.nii.GZ", "a.nii", "a.img"])
def test_corrupt_gzip_is_refused_whatever_its_name(make_nifti, tmp_path, name):
    good = make_nifti("good.nii.gz", np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE))
    raw = bytearray(good.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 16] = b"\x00" * 16
    bad = tmp_path / name
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        io.read_volume(bad)


@pytest.mark.parametrize("name", ["a.NII.GZ", "a.nii"])
def test_intact_gzip_under_any_name_reads_correctly(make_nifti, tmp_path, name):
    good = make_nifti("good.nii.gz", np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE))
    other = tmp_path / name
    other.write_bytes(good.read_bytes())
    assert_array_equal(io.read_volume(other).data, io.read_volume(good).data)


def test_an_uncompressed_file_named_gz_is_read_as_uncompressed(make_nifti, tmp_path):
    plain = make_nifti("plain.nii", np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE))
    misnamed = tmp_path / "plain.nii.gz"
    misnamed.write_bytes(plain.read_bytes())
    assert_array_equal(io.read_volume(misnamed).data, io.read_volume(plain).data)


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "huge_trailer", "empty_member"])
def test_damaged_gzip_is_a_value_error_naming_the_file(make_nifti, damage):
    path = make_nifti("a.nii.gz", np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE))
    raw = bytearray(path.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) * 2 // 3]
    elif damage == "corrupt":
        raw[len(raw) // 2 : len(raw) // 2 + 16] = b"\x00" * 16
    elif damage == "huge_trailer":
        raw[-4:] = (2**32 - 1).to_bytes(4, "little")  # claims 4 GiB: must not be allocated
    else:
        raw = bytearray(gzip.compress(b""))
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=re.escape(str(path))):
        io.read_volume(path)


# -- our reader accepts exactly the gzip files that Python's gzip.decompress accepts -----
def _gzip_member(payload: bytes, flags: int = 0, fields: bytes = b"", method: int = 8) -> bytes:
    """One gzip member with the given header flags and optional fields (RFC 1952)."""
    body = zlib.compressobj(6, zlib.DEFLATED, -15)
    stream = body.compress(payload) + body.flush()
    head = bytes([0x1F, 0x8B, method, flags, 0, 0, 0, 0, 0, 0xFF]) + fields
    trailer = zlib.crc32(payload).to_bytes(4, "little") + len(payload).to_bytes(4, "little")
    return head + stream + trailer


def _with_header_crc(payload: bytes, flags: int = 0, fields: bytes = b"", *, wrong=False):
    """A member with FHCRC: the low 16 bits of the CRC-32 of the header before it."""
    flags |= 2
    head = bytes([0x1F, 0x8B, 8, flags, 0, 0, 0, 0, 0, 0xFF]) + fields
    crc16 = (zlib.crc32(head) & 0xFFFF) ^ (0x5555 if wrong else 0)
    return _gzip_member(payload, flags, fields + crc16.to_bytes(2, "little"))


def _flip(data: bytes, where: int) -> bytes:
    out = bytearray(data)
    out[where] ^= 1
    return bytes(out)


def _gzip_variants(payload: bytes) -> dict[str, bytes]:
    """Gzip files of ``payload`` (a NIfTI file): every optional header field, several
    members, what may follow the last one, and damage."""
    plain = _gzip_member(payload)
    half = len(payload) // 2
    variants = {
        "plain": plain,
        "python_gzip": gzip.compress(payload, mtime=0),
        "ftext": _gzip_member(payload, 1),
        "fextra": _gzip_member(payload, 4, b"\x06\x00AB\x02\x00xy"),
        "fextra_past_the_end": _gzip_member(payload, 4, b"\xff\xff"),
        "fname": _gzip_member(payload, 8, b"sub-01_mask.nii\0"),
        "unterminated_name": plain[:3] + b"\x08" + plain[4:10] + b"x" * 30,
        "fcomment": _gzip_member(payload, 16, b"made by a scanner\0"),
        "fhcrc": _with_header_crc(payload),
        "fhcrc_wrong": _with_header_crc(payload, wrong=True),
        "all_fields": _with_header_crc(payload, 1 | 4 | 8 | 16, b"\x02\x00xyname\0comment\0"),
        "reserved_flag": _gzip_member(payload, 0x20),
        "unknown_method": _gzip_member(payload, 0, b"", method=7),
        "two_members": _gzip_member(payload[:half]) + _gzip_member(payload[half:]),
        "two_members_cut_in_the_header": _gzip_member(payload[:100]) + _gzip_member(payload[100:]),
        "empty_member_first": _gzip_member(b"") + plain,
        "empty_member_last": plain + _gzip_member(b""),
        "zero_padding": plain + b"\0" * 16,
        "zero_padding_between_members": (
            _gzip_member(payload[:half]) + b"\0" * 5 + _gzip_member(payload[half:])
        ),
        "junk_after": plain + b"trailing junk!",
        "junk_with_magic_after": plain + b"\x1f\x8b junk",
        "lone_magic_after": plain + b"\x1f\x8b",
        "zero_padding_then_junk": plain + b"\0\0x",
        # junk whose last 8 bytes are the member's trailer: a reader that takes the file's
        # last 8 bytes for the trailer of what it inflated would accept it
        "junk_ending_with_the_trailer": plain + b"junk" + plain[-8:],
        "the_same_member_twice": plain * 2,
        "wrong_crc": _flip(plain, len(plain) - 8),
        "wrong_isize": _flip(plain, len(plain) - 4),
        "isize_of_4_gib": plain[:-4] + (2**32 - 1).to_bytes(4, "little"),
    }
    for cut in (5, 10, 30, len(plain) // 2, len(plain) - 8, len(plain) - 1):
        variants[f"truncated_at_{cut}"] = plain[:cut]
    return variants


def _python_reads(data: bytes) -> bytes | None:
    """The content Python's gzip reads from ``data``, or None if it refuses it."""
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error):
        return None


_NIFTI_PAYLOAD = nb.Nifti1Image(
    np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE), default_affine()
).to_bytes()

#: Where the reader is stricter than Python's gzip, by its documented rules
#: (io/inflating.py): the first header's CRC (FHCRC) is checked, as zlib and GNU gzip check
#: it, and reserved header flags are refused, as RFC 1952 asks.
_STRICTER = {"fhcrc_wrong", "reserved_flag"}


@pytest.mark.parametrize("variant", list(_gzip_variants(_NIFTI_PAYLOAD)))
def test_a_gzip_file_is_read_exactly_when_pythons_gzip_reads_it(tmp_path, variant):
    data = _gzip_variants(_NIFTI_PAYLOAD)[variant]
    path = tmp_path / f"{variant}.nii.gz"
    path.write_bytes(data)
    content = _python_reads(data)
    assert (variant in _STRICTER) <= (content is not None)  # Python's gzip reads those
    if content is None or variant in _STRICTER:
        with pytest.raises(ValueError, match=re.escape(str(path))):
            io.read_volume(path)
        return
    volume = io.read_volume(path)
    expected = nb.Nifti1Image.from_bytes(content)
    assert_array_equal(volume.data, np.asanyarray(expected.dataobj))
    assert volume.header.binaryblock == content[:348]
    assert io.read_header(path).binaryblock == content[:348]


def test_the_gzip_variants_exercise_both_outcomes():
    # The comparison above proves nothing unless Python's gzip accepts some and refuses
    # others.
    outcomes = [_python_reads(d) is None for d in _gzip_variants(_NIFTI_PAYLOAD).values()]
    assert 10 < sum(outcomes) < len(outcomes) - 10


# -- only regular files are read -----------------------------------------------------------
def _in_thread(call, timeout=10.0):
    """Run ``call`` on a thread; fail (instead of hanging) if it does not return in time."""
    outcome = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            outcome["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    return thread, outcome


READERS = {
    "read_volume": io.read_volume,
    "read_nifti_data": io.read_nifti_data,
    "read_header": io.read_header,
    "file_digest": io.file_digest,
}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_fifo_is_refused_at_once_naming_it(tmp_path, reader):
    fifo = tmp_path / "pipe.nii.gz"
    os.mkfifo(fifo)
    thread, outcome = _in_thread(lambda: READERS[reader](fifo))
    try:
        assert not thread.is_alive(), f"{reader} waits for a writer of the FIFO"
    finally:
        if thread.is_alive():  # a writer end unblocks the reader: no thread left hanging
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            thread.join(10)
    err = outcome.get("error")
    assert isinstance(err, ValueError), outcome
    assert re.search(re.escape(str(fifo)) + r": not a regular file \(a FIFO", str(err)), err


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("kind", ["device", "link_to_device", "socket", "folder"])
def test_anything_but_a_regular_file_is_refused_naming_it(tmp_path, reader, kind):
    path = tmp_path / "odd.nii"
    if kind == "device":
        path = "/dev/zero"
        if not os.path.exists(path):
            pytest.skip("no /dev/zero here")
    elif kind == "link_to_device":
        path.symlink_to("/dev/zero")
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
    else:
        path.mkdir()
    expected = {
        "device": "a character device",
        "link_to_device": "a character device",
        "socket": "a socket",
        "folder": "a folder",
    }[kind]
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + re.escape(expected)):
        READERS[reader](path)


# -- bounded reading: no more is read, inflated or allocated than the header declares ---
def _huge_header_gzip(path, shape=(2000, 2000, 2000)):
    """A .nii.gz whose header declares 64 GB of float64 voxels over a few bytes of data."""
    header = nb.Nifti1Header()
    header.set_data_dtype(np.float64)
    header.set_data_shape(shape)
    header.set_qform(default_affine(), code=1)
    raw = header.binaryblock + b"\0" * 4 + bytes(10_000)
    path.write_bytes(gzip.compress(raw))
    return path


def test_a_header_declaring_more_than_deflate_can_hold_is_refused_before_inflating(
    tmp_path, monkeypatch
):
    path = _huge_header_gzip(tmp_path / "huge.nii.gz")
    assert 2000**3 * 8 > reading.MAX_DEFLATE_RATIO * path.stat().st_size

    def must_not_inflate(*args):
        raise AssertionError("the voxels were inflated")

    monkeypatch.setattr(reading.inflating, "inflate", must_not_inflate)
    tracemalloc.start()
    try:
        start = time.monotonic()
        with pytest.raises(ValueError, match=re.escape(str(path)) + ".*more than a gzip file"):
            io.read_volume(path)
        elapsed = time.monotonic() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 2.0
    assert peak < 10 * 2**20, f"{peak} bytes allocated"


def test_a_header_within_the_ratio_but_beyond_the_data_inflates_no_more_than_there_is(
    tmp_path,
):
    # 1000 x 1000 x 20 float64: 160 MB declared, under 1032 x the compressed size (200 kB
    # of random bytes); the stream ends long before: refused as truncated, and no more is
    # allocated than the header declares (plus the reader's slack), which the ratio bounds.
    header = nb.Nifti1Header()
    header.set_data_dtype(np.float64)
    header.set_data_shape((1000, 1000, 20))
    header.set_qform(default_affine(), code=1)
    path = tmp_path / "short.nii.gz"
    path.write_bytes(gzip.compress(header.binaryblock + bytes(4) + os.urandom(200_000), 1))
    assert 160e6 < reading.MAX_DEFLATE_RATIO * path.stat().st_size
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=re.escape(str(path)) + ".*truncated"):
            io.read_volume(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    declared = 1000 * 1000 * 20 * 8 + 352
    assert peak < declared + inflating.SLACK + 10 * 2**20, f"{peak} bytes allocated"


def test_a_trailer_claiming_gigabytes_allocates_nothing_of_the_kind(make_nifti):
    path = make_nifti("a.nii.gz", np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE))
    raw = bytearray(path.read_bytes())
    raw[-4:] = (2**32 - 1).to_bytes(4, "little")  # ISIZE: 4 GiB
    path.write_bytes(bytes(raw))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=re.escape(str(path))):
            io.read_volume(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20, f"{peak} bytes allocated"


def test_an_uncompressed_file_with_junk_after_the_voxels_is_read(tmp_path, rng):
    data = rng.random(SHAPE).astype(np.float32)
    path = _write(tmp_path / "a.nii", data)
    raw = path.read_bytes()
    path.write_bytes(raw + b"junk after the voxels" * 100)
    volume = io.read_volume(path)
    assert_array_equal(volume.data, data)
    assert volume.header.binaryblock == raw[:348]


def test_an_uncompressed_file_shorter_than_declared_is_refused(tmp_path, rng):
    path = _write(tmp_path / "a.nii", rng.random(SHAPE).astype(np.float32))
    path.write_bytes(path.read_bytes()[:-1])  # one byte short
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*truncated"):
        io.read_volume(path)


# -- one validated header step: every malformed header is a ValueError naming the file -
def _header_case(path, field, value, *, gz):
    """Write a valid float32 image, then set one raw header field to ``value``."""
    data = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    img = nb.Nifti1Image(data, default_affine())
    img.header.set_qform(default_affine(), code=1)
    raw = bytearray(img.to_bytes())
    hdr = nb.Nifti1Header(bytes(raw[:348]))
    hdr[field] = value
    raw[:348] = hdr.binaryblock
    path.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
    return path


MALFORMED = {
    "invalid_quaternion": ("quatern_b", 2.0),
    "nan_scl_inter": ("scl_inter", np.nan),
    "inf_scl_inter": ("scl_inter", np.inf),
    "nan_sform": ("srow_x", [np.nan, 0, 0, 0]),
    "singular_sform": ("srow_x", [0, 0, 0, 0]),
    "nan_pixdim": ("pixdim", [1, np.nan, 2, 2, 1, 1, 1, 1]),
    "absurd_dims": ("dim", [3, 30000, 30000, 30000, 1, 1, 1, 1]),
    "one_slice_more_than_the_file_holds": ("dim", [3, 7, 8, 10, 1, 1, 1, 1]),
    "zero_length_axis": ("dim", [3, 7, 0, 9, 1, 1, 1, 1]),
    "negative_axis": ("dim", [3, 7, -8, 9, 1, 1, 1, 1]),
    "bad_ndim": ("dim", [9, 7, 8, 9, 1, 1, 1, 1]),
    "eight_axes": ("dim", [8, 7, 8, 9, 1, 1, 1, 1]),  # one more than NIfTI allows
    "unknown_datatype": ("datatype", 1234),
}


@pytest.mark.parametrize("gz", [True, False], ids=["nii.gz", "nii"])
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_header_is_a_value_error_before_any_work(tmp_path, case, gz):
    field, value = MALFORMED[case]
    if case in ("nan_sform", "singular_sform"):
        hook = {"sform_code": 1}
    elif case == "nan_pixdim":
        hook = {"sform_code": 0}
    else:
        hook = {}
    bad = _header_case(tmp_path / ("bad.nii.gz" if gz else "bad.nii"), field, value, gz=gz)
    for key, val in hook.items():  # the field must be in force to matter
        raw = bad.read_bytes()
        raw = bytearray(gzip.decompress(raw) if gz else raw)
        hdr = nb.Nifti1Header(bytes(raw[:348]))
        hdr[key] = val
        raw[:348] = hdr.binaryblock
        bad.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        io.read_volume(bad)


def test_a_file_shorter_than_any_header_says_so(tmp_path):
    tiny = tmp_path / "tiny.nii"
    tiny.write_bytes(b"\0" * 100)
    with pytest.raises(ValueError, match=re.escape(f"{tiny}: not a NIfTI image: 100 bytes")):
        io.read_volume(tiny)
    tiny.write_bytes(b"\0" * 348)  # as long as a header, but none
    with pytest.raises(ValueError, match=re.escape(f"{tiny}: not a NIfTI-1 or NIfTI-2 image")):
        io.read_volume(tiny)


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.float64])
def test_truncated_voxel_data_of_any_width_is_refused_naming_the_file(tmp_path, rng, dtype):
    # The bytes the header promises are counted in the type's width (mutant: divided by
    # it, so that a file missing most of its voxels passed the check).
    path = tmp_path / "cut.nii"
    _write(path, rng.random(SHAPE).astype(dtype))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - np.prod(SHAPE) * np.dtype(dtype).itemsize // 2])
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*truncated"):
        io.read_volume(path)


def test_seven_axes_with_singleton_trailing_ones_are_one_volume(tmp_path, rng):
    # dim[0] may be 7 (the NIfTI maximum): a 3D volume stored as (x, y, z, 1, 1, 1, 1) is
    # read as the 3D volume it is (mutant: seven axes refused).
    data = rng.random(SHAPE).astype(np.float32)
    path = _write(tmp_path / "a.nii", data.reshape(SHAPE + (1, 1, 1, 1)))
    volume = io.read_volume(path)
    assert volume.shape == SHAPE
    assert_array_equal(volume.data, data)


def test_a_broken_quaternion_out_of_force_is_ignored(tmp_path, rng):
    # qform_code 0: the quaternion fields are not in force (the sform is), so a broken
    # one does not make the file unreadable (mutant: the qform checked whatever its code).
    data = rng.random(SHAPE).astype(np.float32)
    img = nb.Nifti1Image(data, default_affine())
    img.header.set_sform(default_affine(), code=1)
    img.header.set_qform(None, code=0)
    img.header["quatern_b"] = img.header["quatern_c"] = img.header["quatern_d"] = 0.9
    path = tmp_path / "a.nii"
    img.to_filename(path)
    volume = io.read_volume(path)
    assert_array_equal(volume.affine, default_affine())
    assert_array_equal(volume.data, data)


def test_foreign_format_is_a_value_error_not_an_import_error(tmp_path):
    minc2 = tmp_path / "brain.mnc"
    minc2.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 2000)  # the HDF5 signature of MINC2
    analyze = tmp_path / "pair.nii"
    img = nb.Nifti1Pair(np.zeros(SHAPE, np.uint8), default_affine())
    analyze.write_bytes(img.header.binaryblock + b"\0" * 10000)
    for bad in (minc2, analyze):
        with pytest.raises(ValueError, match=re.escape(str(bad))):
            io.read_volume(bad)


def _fuzzed_files(tmp_path, rng, n_cases):
    """Yield (case, files): a valid first input, then one whose header bytes are damaged."""
    base = (rng.random(SHAPE) * 10).astype(np.float32)
    img = nb.Nifti1Image(base, default_affine())
    img.header.set_qform(default_affine(), code=1)
    img.header.set_sform(default_affine(), code=1)
    first = tmp_path / "first.nii"
    img.to_filename(first)
    raw = img.to_bytes()
    layout = nb.Nifti1Header.template_dtype
    fields = [name for name in layout.names if name not in ("sizeof_hdr", "magic")]
    for case in range(n_cases):
        header = bytearray(raw[:348])
        for field in rng.choice(fields, size=rng.integers(1, 4), replace=False):
            start = layout.fields[field][1]
            size = layout[field].itemsize
            if rng.random() < 0.5:  # random bytes
                header[start : start + size] = rng.bytes(size)
            else:  # a plausible but wrong value: flip one element to an extreme
                values = np.frombuffer(bytes(header[start : start + size]), layout[field]).copy()
                if values.dtype.kind in "iuf":
                    extremes = [0, -1, 1, 2**15 - 1] + (
                        [np.nan, np.inf, -np.inf, 1e30] if values.dtype.kind == "f" else []
                    )
                    flat = values.reshape(-1)
                    flat[rng.integers(flat.size)] = rng.choice(extremes)
                    header[start : start + size] = values.tobytes()
        path = tmp_path / f"fuzz{case:03d}.nii"
        path.write_bytes(bytes(header) + raw[348:])
        yield case, [str(first), str(path)]


def test_fuzzed_headers_give_the_reference_result_or_a_value_error(tmp_path, rng):
    """Damage header fields at random: the result is the plain nibabel loop's, or a
    ValueError that names the damaged file; nothing else ever escapes."""
    outcomes = {"same": 0, "refused": 0}
    for case, files in _fuzzed_files(tmp_path, rng, n_cases=300):
        try:
            ours = np.asanyarray(compute_heatmap(files).dataobj)
        except ValueError as err:
            assert files[1] in str(err), f"case {case}: error does not name the file: {err}"
            outcomes["refused"] += 1
            continue
        except Exception as err:  # noqa: BLE001 - this is what the test is about
            pytest.fail(f"case {case}: {type(err).__name__} escaped: {err}")
        try:
            with np.errstate(all="ignore"):
                expected = reference_heatmap(files)
        except Exception as err:  # noqa: BLE001
            pytest.fail(f"case {case}: we accepted a file nibabel cannot read ({err})")
        assert_array_equal(_bits(ours), _bits(expected), err_msg=f"case {case}")
        outcomes["same"] += 1
    # The fuzzing must exercise both outcomes, or it proves nothing.
    assert outcomes["same"] > 20 and outcomes["refused"] > 20, outcomes


# -- values: bit for bit the plain loop -----------------------------------------------
CASES = {
    "masks": lambda rng: [(rng.random(SHAPE) > 0.7).astype(np.uint8) for _ in range(4)],
    "int16_scaled": lambda rng: [_random(rng, "int16") for _ in range(3)],
    "float32_nan": lambda rng: [
        np.where(rng.random(SHAPE) > 0.1, rng.random(SHAPE), np.nan).astype(np.float32)
        for _ in range(3)
    ],
    "mixed_order": lambda rng: [
        (rng.random(SHAPE) > 0.5).astype(np.uint8),
        rng.random(SHAPE).astype(np.float32),
        _random(rng, "int16"),
        (rng.random(SHAPE) > 0.5).astype(np.uint8),
        rng.random(SHAPE).astype(np.float64),
    ],
    "big_endian_mix": lambda rng: [_random(rng, "int16"), _random(rng, "float32")],
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize(
    ("use_mean", "clip", "normalize"), list(itertools.product([True, False], repeat=3))
)
def test_result_equals_plain_loop_bit_for_bit(tmp_path, rng, case, use_mean, clip, normalize):
    arrays = CASES[case](rng)
    files = []
    for index, data in enumerate(arrays):
        scaled = case == "int16_scaled" or (case == "mixed_order" and data.dtype == np.int16)
        files.append(
            str(
                _write(
                    tmp_path / f"f{index}.nii.gz",
                    data,
                    slope=0.125 * (index + 1) if scaled else None,
                    inter=index - 1.5 if scaled else None,
                    big_endian=case == "big_endian_mix" and index == 0,
                )
            )
        )
    fast = np.asanyarray(compute_heatmap(files, use_mean, clip, normalize).dataobj)
    assert_array_equal(_bits(fast), _bits(reference_heatmap(files, use_mean, clip, normalize)))


# -- read-ahead ---------------------------------------------------------------------------
def test_read_ahead_yields_in_order_and_stops_on_error(tmp_path):
    paths = [str(_write(tmp_path / f"v{i}.nii.gz", np.full(SHAPE, i, np.uint8))) for i in range(6)]
    bad = tmp_path / "v3.nii.gz"
    bad.write_bytes(b"not a gzip file")
    seen = []
    with no_worker_thread_left(), pytest.raises(ValueError, match=re.escape(str(bad))):
        with io.ReadAhead(paths, read_ahead=2) as volumes:
            for volume in volumes:
                seen.append(int(volume.data.max()))
    assert seen == [0, 1, 2]


def test_read_ahead_is_bounded(tmp_path, monkeypatch):
    paths = [str(_write(tmp_path / f"v{i}.nii.gz", np.full(SHAPE, i, np.uint8))) for i in range(8)]
    started = []
    real = reading.read_volume
    monkeypatch.setattr(reading, "read_volume", lambda p, **k: started.append(p) or real(p, **k))
    consumed = 0
    # More reader threads than reads allowed ahead, and a slow consumer: every read that
    # is queued starts, so the count of started reads is the count of queued ones.
    with no_worker_thread_left(), io.ReadAhead(paths, read_ahead=2, workers=8) as volumes:
        for _ in volumes:
            consumed += 1
            time.sleep(0.05)
            # the one being used, plus at most read_ahead behind it
            assert len(started) <= consumed + 2
    assert consumed == 8
    assert started == paths


def test_read_ahead_of_zero_reads_in_the_calling_thread(tmp_path, monkeypatch):
    paths = [str(_write(tmp_path / f"v{i}.nii.gz", np.full(SHAPE, i, np.uint8))) for i in range(3)]
    readers = []
    real = reading.read_volume

    def recording_read_volume(path, **kwargs):
        readers.append(threading.current_thread())
        return real(path, **kwargs)

    monkeypatch.setattr(reading, "read_volume", recording_read_volume)
    with io.ReadAhead(paths, read_ahead=0) as volumes:
        assert [int(v.data.max()) for v in volumes] == [0, 1, 2]
    assert readers == [threading.current_thread()] * 3


def test_prepare_runs_on_the_reader_threads_and_its_errors_come_at_that_file_s_turn(tmp_path):
    paths = [str(_write(tmp_path / f"v{i}.nii.gz", np.full(SHAPE, i, np.uint8))) for i in range(5)]
    threads = []

    def prepare(volume):
        threads.append(threading.current_thread().name)
        if volume.path == paths[3]:
            raise ValueError(f"{volume.path}: refused by prepare")
        return int(volume.data.max()), volume.digest

    seen = []
    with no_worker_thread_left(), pytest.raises(ValueError, match=re.escape(paths[3])):
        with io.ReadAhead(paths, read_ahead=2, digest=True, prepare=prepare) as prepared:
            for item in prepared:
                seen.append(item)
    assert [value for value, _ in seen] == [0, 1, 2]
    assert [digest for _, digest in seen] == [io.file_digest(p) for p in paths[:3]]
    assert threads and all(name.startswith("heatmap-read") for name in threads)


def test_entering_a_read_ahead_starts_the_first_reads(tmp_path):
    # The first reads run while the caller still works on something else (the first
    # volume): they start when the block is entered, not when iteration begins.
    paths = [str(_write(tmp_path / f"v{i}.nii.gz", np.full(SHAPE, i, np.uint8))) for i in range(4)]
    read = threading.Event()

    def prepare(volume):
        read.set()
        return int(volume.data.max())

    with no_worker_thread_left(), io.ReadAhead(paths, read_ahead=2, prepare=prepare) as values:
        assert read.wait(timeout=30), "no read started before the iteration"
        assert list(values) == [0, 1, 2, 3]


def test_leaving_a_read_ahead_early_leaves_no_reader_thread(tmp_path):
    paths = [str(_write(tmp_path / f"v{i}.nii.gz", np.full(SHAPE, i, np.uint8))) for i in range(6)]
    with no_worker_thread_left(), io.ReadAhead(paths, read_ahead=3, workers=3) as volumes:
        assert int(next(iter(volumes)).data.max()) == 0


def test_read_header_reads_gzip_and_plain(make_nifti):
    for name in ("a.nii.gz", "b.nii"):
        path = make_nifti(name)
        assert io.read_header(path).get_data_shape() == SHAPE


def test_a_digest_is_the_sha256_of_the_stored_bytes(make_nifti):
    import hashlib

    path = make_nifti("a.nii.gz")
    expected = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert io.read_volume(path, digest=True).digest == expected
    assert io.read_volume(path).digest is None
    assert io.file_digest(path) == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ((1, 1, 1), (0.0, 1.0)),
        ((-3, -7, -2), (-7.0, 0.0)),
        ((), (0.0, 0.0)),
        ((5, -4), (-4.0, 5.0)),
    ],
    ids=["mask", "all_negative", "all_zero", "mixed"],
)
def test_a_sparse_integer_volume_has_the_range_of_all_its_voxels(tmp_path, values, expected):
    # A few non-zero voxels among zeros: the range counts the zeros (masks, all-negative
    # and empty volumes), as Python ints (exact).
    big = (64, 60, 56)
    data = np.zeros(big, np.int16)
    for i, v in enumerate(values):
        data[i, 2 * i, 3] = v
    path = str(_write(tmp_path / "s.nii.gz", data))
    volume = io.read_volume(path)
    values_ = values_on_grid(volume, io.Grid(volume.shape, volume.affine, path))
    assert values_.value_range == expected
    assert all(type(v) is int for v in values_.value_range)
    assert values_.value_range == (data.min(), data.max())


def test_unused_dimensions_written_as_zero_are_ignored(tmp_path, rng):
    # Some writers leave dim[4..7] at 0 instead of 1 for a 3D image: only dim[1..dim[0]]
    # describe the data (mutant: one axis more read, a zero-length axis refused).
    data = rng.random(SHAPE).astype(np.float32)
    path = _write(tmp_path / "a.nii", data)
    raw = bytearray(path.read_bytes())
    hdr = nb.Nifti1Header(bytes(raw[:348]))
    hdr["dim"] = [3, *SHAPE, 0, 0, 0, 0]
    raw[:348] = hdr.binaryblock
    path.write_bytes(bytes(raw))
    volume = io.read_volume(path)
    assert volume.shape == SHAPE
    assert_array_equal(volume.data, data)


# -- found while porting (each with its fix in io/reading.py) ---------------------------
@pytest.mark.parametrize("nifti2", [False, True], ids=["nifti1", "nifti2"])
@pytest.mark.parametrize("first", [0, 1, 100, 347, 352, 539])
def test_a_gzip_member_may_end_inside_the_header(tmp_path, nifti2, first):
    # Python's gzip (and so nibabel) reads every member as one stream: a first member of
    # 0-539 bytes (an empty one, one holding part of the header) is no reason to refuse.
    klass = nb.Nifti2Image if nifti2 else nb.Nifti1Image
    data = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    raw = klass(data, default_affine()).to_bytes()
    path = tmp_path / "split.nii.gz"
    path.write_bytes(gzip.compress(raw[:first]) + gzip.compress(raw[first:]))
    volume = io.read_volume(path)
    assert_array_equal(volume.data, data)
    assert volume.header.binaryblock == raw[: volume.header.sizeof_hdr]
    assert io.read_header(path).binaryblock == volume.header.binaryblock


@pytest.mark.parametrize("reader", ["read_volume", "read_header"])
@pytest.mark.parametrize("members", [1, 2])
@pytest.mark.parametrize("cut", [12, 30, 60])
def test_a_gzip_file_cut_before_the_end_of_its_header_is_called_truncated(
    tmp_path, reader, members, cut
):
    # Not "not a NIfTI image: 0 bytes": the gzip stream ends early (a cut download).
    raw = nb.Nifti1Image(np.zeros(SHAPE, np.int16), default_affine()).to_bytes()
    whole = gzip.compress(raw) if members == 1 else gzip.compress(b"") + gzip.compress(raw)
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(whole[: cut + (members - 1) * 20])
    with pytest.raises(ValueError, match=re.escape(f"{path}: damaged gzip data") + ".*truncated"):
        getattr(io, reader)(path)


@pytest.mark.parametrize(
    ("field", "value"),
    [("datatype", 1234), ("quatern_b", 2.0)],
    ids=["unknown_datatype", "invalid_quaternion"],
)
def test_a_header_checked_before_reading_names_the_file_for_any_field_it_cannot_read(
    make_nifti, field, value
):
    # The header-only check against the first file's grid (before any voxel is read)
    # meets such a header before the one validated header step does: a KeyError or
    # HeaderDataError from nibabel must not escape.
    first = make_nifti("a.nii.gz")
    img = nb.Nifti1Image(np.zeros(SHAPE, np.float32), default_affine())
    img.header.set_qform(default_affine(), code=1)
    img.header.set_sform(None, code=0)
    raw = bytearray(img.to_bytes())
    header = nb.Nifti1Header(bytes(raw[:348]))
    header[field] = value
    raw[:348] = header.binaryblock
    bad = first.parent / "b.nii"
    bad.write_bytes(bytes(raw))
    grid = io.Grid(SHAPE, default_affine(), str(first))
    with pytest.raises(ValueError, match=re.escape(f"{bad}: invalid NIfTI header")):
        io.check_volume_header(str(bad), io.read_header(bad), grid)
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        compute_heatmap([first, bad])


def test_a_header_of_absurd_shape_is_refused_without_allocating_it(make_nifti):
    # 30000**3 voxels: the header-only check must not allocate the declared shape to say
    # that it differs from the first file's (it raised numpy's MemoryError for 24.6 TiB).
    first = make_nifti("a.nii.gz")
    img = nb.Nifti1Image(np.zeros(SHAPE, np.uint8), default_affine())
    raw = bytearray(img.to_bytes())
    header = nb.Nifti1Header(bytes(raw[:348]))
    header["dim"] = [3, 30000, 30000, 30000, 1, 1, 1, 1]
    raw[:348] = header.binaryblock
    bad = first.with_name("b.nii")
    bad.write_bytes(bytes(raw))
    grid = io.Grid(SHAPE, default_affine(), str(first))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=re.escape(str(bad)) + ".*30000, 30000, 30000"):
            io.check_volume_header(str(bad), io.read_header(bad), grid)
        with pytest.raises(ValueError, match=re.escape(str(bad))):
            compute_heatmap([first, bad])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20, f"{peak} bytes allocated"
