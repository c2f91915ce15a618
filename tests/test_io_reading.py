"""The one read path: gzip by content, verified; one validated header step; read-ahead."""

from __future__ import annotations

import gzip
import itertools
import re
import time
import zlib

import nibabel as nb
import numpy as np
import pytest
from numpy.testing import assert_array_equal

from benchmarks.reference_loop import reference_heatmap
from nipype_heatmap import io
from nipype_heatmap.api import compute_heatmap
from nipype_heatmap.io import reading

from .conftest import SHAPE, default_affine

DTYPES = ["uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "float32", "float64"]


@pytest.fixture(params=["libdeflate", "zlib"])
def inflater(request, monkeypatch):
    """Run a test once through libdeflate and once through Python's gzip (zlib)."""
    if request.param == "libdeflate":
        if not reading.have_deflate:
            pytest.skip("libdeflate (the 'deflate' package) is not importable here")
    else:
        monkeypatch.setattr(reading, "have_deflate", False)
    return request.param


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
def test_read_equals_nibabel(tmp_path, rng, inflater, dtype, scaled):
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
def test_unusual_files_read_like_nibabel(tmp_path, rng, inflater, case):
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
        # The last member's length (the file's trailer) equals the first's: only the
        # CRC tells the one-member fast path that it inflated half of the file.
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


# -- gzip is decided by content and always verified (issue: name-case bypass) ----------
@pytest.mark.parametrize("name", ["a.nii.gz", "a.NII.GZ", "a.nii.GZ", "a.nii", "a.img"])
def test_corrupt_gzip_is_refused_whatever_its_name(make_nifti, tmp_path, inflater, name):
    good = make_nifti("good.nii.gz", np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE))
    raw = bytearray(good.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 16] = b"\x00" * 16
    bad = tmp_path / name
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        io.read_volume(bad)


@pytest.mark.parametrize("name", ["a.NII.GZ", "a.nii"])
def test_intact_gzip_under_any_name_reads_correctly(make_nifti, tmp_path, inflater, name):
    good = make_nifti("good.nii.gz", np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE))
    other = tmp_path / name
    other.write_bytes(good.read_bytes())
    assert_array_equal(io.read_volume(other).data, io.read_volume(good).data)


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "huge_trailer", "empty_member"])
def test_damaged_gzip_is_a_value_error_naming_the_file(make_nifti, inflater, damage):
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


@pytest.mark.parametrize(
    ("tail", "accepted"),
    [(b"", True), (b"\0" * 16, True), (b"trailing junk!", False), (b"\x1f\x8b junk", False)],
    ids=["nothing", "zero_padding", "junk", "junk_with_magic"],
)
def test_both_inflaters_accept_exactly_the_same_files(make_nifti, monkeypatch, tail, accepted):
    path = make_nifti("a.nii.gz", np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE))
    path.write_bytes(path.read_bytes() + tail)
    outcomes = []
    for fast in (True, False):
        monkeypatch.setattr(reading, "have_deflate", fast and reading.have_deflate)
        try:
            outcomes.append(io.read_volume(path).data.sum())
        except ValueError as err:
            assert str(path) in str(err)
            outcomes.append("refused")
    assert outcomes[0] == outcomes[1]
    assert (outcomes[0] != "refused") == accepted


def _gzip_member(payload: bytes, flags: int = 0, fields: bytes = b"", method: int = 8) -> bytes:
    """One gzip member with the given header flags and optional fields (RFC 1952)."""
    body = zlib.compressobj(6, zlib.DEFLATED, -15)
    stream = body.compress(payload) + body.flush()
    head = bytes([0x1F, 0x8B, method, flags, 0, 0, 0, 0, 0, 0xFF]) + fields
    trailer = zlib.crc32(payload).to_bytes(4, "little") + len(payload).to_bytes(4, "little")
    return head + stream + trailer


def _gzip_variants(payload: bytes) -> dict[str, tuple[bytes, bool]]:
    """Gzip files of ``payload``: name -> (bytes, whether the fast path may take them)."""
    plain = _gzip_member(payload)
    wrong_crc = bytearray(plain)
    wrong_crc[-8] ^= 1
    wrong_size = bytearray(plain)
    wrong_size[-4] ^= 1
    half = len(payload) // 2
    return {
        "plain": (plain, True),
        "ftext": (_gzip_member(payload, 1), True),
        "fextra_past_the_end": (_gzip_member(payload, 4, b"\xff\xff"), False),
        "fname": (_gzip_member(payload, 8, b"sub-01_mask.nii\0"), True),
        "fcomment": (_gzip_member(payload, 16, b"made by a scanner\0"), True),
        "fextra": (_gzip_member(payload, 4, b"\x06\x00AB\x02\x00xy"), True),
        "fhcrc": (_gzip_member(payload, 2, b"\x12\x34"), True),
        "all_fields": (
            _gzip_member(payload, 2 | 4 | 8 | 16, b"\x00\x00a.nii\0c\0\x12\x34"),
            True,
        ),
        "python_gzip": (gzip.compress(payload, mtime=0), True),
        "reserved_flag": (_gzip_member(payload, 0x20), False),
        "unknown_method": (_gzip_member(payload, 0, b"", method=7), False),
        "unterminated_name": (plain[:3] + b"\x08" + plain[4:10] + b"x" * 30, False),
        "wrong_crc": (bytes(wrong_crc), False),
        "wrong_size": (bytes(wrong_size), False),
        "two_members": (_gzip_member(payload[:half]) + _gzip_member(payload[half:]), False),
    }


def test_gzip_headers_and_trailers_are_read_as_pythons_gzip_reads_them(tmp_path, monkeypatch):
    """Every optional header field, and what must send a file to Python's gzip (or make
    it refused): the fast path and the zlib path agree on every file."""
    if not reading.have_deflate:
        pytest.skip("libdeflate (the 'deflate' package) is not importable here")
    payload = bytes(range(256)) * 300 + bytes(5000)
    for name, (data, fast) in _gzip_variants(payload).items():
        path = tmp_path / f"{name}.gz"
        path.write_bytes(data)
        outcomes = []
        for have in (True, False):
            monkeypatch.setattr(reading, "have_deflate", have)
            try:
                outcomes.append(bytes(reading.read_file_bytes(str(path))))
            except ValueError as err:
                assert str(path) in str(err), name
                outcomes.append("refused")
        assert outcomes[0] == outcomes[1], name
        monkeypatch.setattr(reading, "have_deflate", True)
        taken = reading._inflate_one_member(data)
        assert (taken is not None) == fast, name
        if fast:
            assert bytes(taken) == payload, name


def test_a_member_repeated_at_the_end_gives_the_same_image_through_both_inflaters(
    make_nifti, monkeypatch
):
    """The one gzip file the fast path reads otherwise than Python's gzip: a last member
    with the first one's CRC and length (the same member twice) is read as the first
    member alone, which holds the whole image: the volume is the same."""
    if not reading.have_deflate:
        pytest.skip("libdeflate (the 'deflate' package) is not importable here")
    path = make_nifti("a.nii.gz", np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE))
    member = path.read_bytes()
    path.write_bytes(member * 2)
    assert reading._inflate_one_member(member * 2) == gzip.decompress(member)
    volumes = []
    for have in (True, False):
        monkeypatch.setattr(reading, "have_deflate", have)
        volumes.append(io.read_volume(path))
    assert_array_equal(volumes[0].data, volumes[1].data)
    assert volumes[0].header.binaryblock == volumes[1].header.binaryblock


def test_libdeflate_is_used_for_a_plain_file_with_one_crc_pass(make_nifti, monkeypatch):
    if not reading.have_deflate:
        pytest.skip("libdeflate (the 'deflate' package) is not importable here")
    path = make_nifti("a.nii.gz")
    calls = []

    def spy(module, name):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a: calls.append(name) or real(*a))

    for name in ("deflate_decompress", "gzip_decompress", "crc32"):
        spy(reading.deflate, name)
    if reading.have_isal:
        spy(reading.isal_zlib, "crc32")
    io.read_volume(path)
    # raw inflate and one CRC32 of the output; libdeflate's gzip inflater would add a second
    assert calls == ["deflate_decompress", "crc32"]


@pytest.mark.parametrize("have_isal", [True, False], ids=["isal", "libdeflate"])
def test_the_crc_is_isals_where_installed_else_libdeflates(monkeypatch, have_isal):
    if have_isal and not reading.have_isal:
        pytest.skip("ISA-L (the 'isal' package) is not importable here")
    monkeypatch.setattr(reading, "have_isal", have_isal)
    payload = bytes(range(256)) * 4000
    assert reading._crc32(payload) == zlib.crc32(payload)
    module = reading.isal_zlib if have_isal else reading.deflate
    monkeypatch.setattr(module, "crc32", lambda data: 12345)
    assert reading._crc32(payload) == 12345


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
    "zero_length_axis": ("dim", [3, 7, 0, 9, 1, 1, 1, 1]),
    "negative_axis": ("dim", [3, 7, -8, 9, 1, 1, 1, 1]),
    "bad_ndim": ("dim", [9, 7, 8, 9, 1, 1, 1, 1]),
    "eight_axes": ("dim", [8, 7, 8, 9, 1, 1, 1, 1]),  # one more than NIfTI allows
    "unknown_datatype": ("datatype", 1234),
}


@pytest.mark.parametrize("gz", [True, False], ids=["nii.gz", "nii"])
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_header_is_a_value_error_before_any_work(tmp_path, inflater, case, gz):
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
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        for volume in io.iter_volumes(paths, read_ahead=2):
            seen.append(int(volume.data.max()))
    assert seen == [0, 1, 2]


def test_read_ahead_is_bounded(tmp_path, monkeypatch):
    paths = [str(_write(tmp_path / f"v{i}.nii.gz", np.full(SHAPE, i, np.uint8))) for i in range(8)]
    started = []
    real = reading._read_with_range
    monkeypatch.setattr(
        reading, "_read_with_range", lambda p, *a: started.append(p) or real(p, *a)
    )
    consumed = 0
    # More reader threads than reads allowed ahead, and a slow consumer: every read that
    # is queued starts, so the count of started reads is the count of queued ones.
    for _ in io.iter_volumes(paths, read_ahead=2, workers=8):
        consumed += 1
        time.sleep(0.05)
        # the one being used, plus at most read_ahead behind it
        assert len(started) <= consumed + 2
    assert consumed == 8


def test_read_ahead_of_zero_reads_in_the_calling_thread(tmp_path, monkeypatch):
    import threading

    paths = [str(_write(tmp_path / f"v{i}.nii.gz", np.full(SHAPE, i, np.uint8))) for i in range(3)]
    readers = []
    real = reading.read_volume

    def recording_read_volume(path, **kwargs):
        readers.append(threading.current_thread())
        return real(path, **kwargs)

    monkeypatch.setattr(reading, "read_volume", recording_read_volume)
    assert [int(v.data.max()) for v in io.iter_volumes(paths, read_ahead=0)] == [0, 1, 2]
    assert readers == [threading.current_thread()] * 3


def test_read_header_reads_gzip_and_plain(make_nifti):
    for name in ("a.nii.gz", "b.nii"):
        path = make_nifti(name)
        assert io.read_header(path).get_data_shape() == SHAPE


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint32, np.int64, np.bool_])
@pytest.mark.parametrize("size", [0, 7, 4096, 4096 * 3 + 5, 100_003])
def test_nonzero_positions_equal_flatnonzero(dtype, size):
    from nipype_heatmap.io.reading import nonzero_positions

    rng = np.random.default_rng(size)
    flat = np.zeros(size, dtype)
    if size:
        hits = rng.integers(0, size, max(1, size // 500))
        if dtype is np.bool_:
            flat[hits] = True
        else:  # any value, including those whose low byte is zero (256) and negatives
            info = np.iinfo(dtype)
            values = rng.integers(info.min, info.max, hits.size, dtype=dtype, endpoint=True)
            values[values == 0] = 1
            values[: min(2, values.size)] = max(1, min(256, info.max))
            flat[hits] = values
        run = slice(size // 3, size // 3 + 2100)  # a blob across block boundaries
        flat[run] = 1
        flat[-1] = 1  # in the tail after the whole blocks
    for block in (64, 1024, 4096):
        np.testing.assert_array_equal(nonzero_positions(flat, block), np.flatnonzero(flat))


@pytest.mark.parametrize("block", [64, 1024, 4096])
def test_nonzero_positions_with_a_limit_lists_sparse_arrays_and_refuses_dense_ones(block):
    from nipype_heatmap.io.reading import nonzero_positions

    flat = np.zeros(500_000, np.uint8)
    flat[[3, 9_000, 499_999]] = [1, 7, 2]
    listed = nonzero_positions(flat, block=block, limit=flat.size // 8)
    np.testing.assert_array_equal(listed, [3, 9_000, 499_999])
    flat[::5] = 1  # non-zero in every block: not worth listing
    assert nonzero_positions(flat, block=block, limit=flat.size // 8) is None
    np.testing.assert_array_equal(nonzero_positions(flat, block=block), np.flatnonzero(flat))
    tiny = np.array([0, 1, 1], np.int16)  # shorter than a block
    assert nonzero_positions(tiny, block=block, limit=1) is None
    np.testing.assert_array_equal(nonzero_positions(tiny, block=block, limit=2), [1, 2])


def test_nonzero_positions_looks_at_every_16th_block_before_scanning_them_all():
    from nipype_heatmap.io.reading import nonzero_positions

    per_block = 64  # voxels of uint8 in a block of 64 bytes
    flat = np.zeros(64 * 1024, np.uint8)  # 1024 blocks; limit: 1/8 of the voxels
    limit = flat.size // 8
    flat[:: 16 * per_block] = 1  # a voxel in each sampled block, none elsewhere
    # 64 blocks really hold a voxel (4096 voxels: under the limit of 8192 for the full
    # scan), but the sample sees every block it looks at hit: taken as dense, not scanned
    assert nonzero_positions(flat, block=64, limit=limit) is None
    # the sample's estimate (all 1024 blocks) at exactly twice the limit is not refused
    assert nonzero_positions(flat, block=64, limit=1024 * per_block // 2) is not None
    assert nonzero_positions(flat, block=64, limit=1024 * per_block // 2 - 1) is None
    # the blocks the sample skips: it sees nothing, the full scan decides (dense: None)
    flat[:] = 1
    flat[:: 16 * per_block] = 0
    flat.reshape(-1, per_block)[::16] = 0
    assert nonzero_positions(flat, block=64, limit=limit) is None
    flat[:] = 0
    flat[5 * per_block + 3] = 9  # sparse, outside the sample: listed
    np.testing.assert_array_equal(nonzero_positions(flat, block=64, limit=limit), [323])


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
def test_a_sparse_volume_listed_by_its_reader_has_the_range_of_all_its_voxels(
    tmp_path, values, expected
):
    # The reader lists the few non-zero voxels of a sparse integer volume and takes its
    # range from them and the zeros around them (mutants: a bound of 1 instead of the
    # zeros' 0, for masks, all-negative and empty volumes).
    big = (64, 60, 56)
    data = np.zeros(big, np.int16)
    for i, v in enumerate(values):
        data[i, 2 * i, 3] = v
    path = str(_write(tmp_path / "s.nii.gz", data))
    volume = reading._read_with_range(path, False)
    assert volume.nonzero_index is not None  # the listed path was taken
    assert volume.value_range == expected
    assert volume.value_range == (data.min(), data.max())


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


@pytest.mark.parametrize("dtype", ["uint8", "int16", "int64", "float32", "float64"])
def test_min_max_block_by_block_equals_numpys_min_and_max(monkeypatch, rng, dtype):
    from nipype_heatmap.io.reading import min_max

    monkeypatch.setattr(reading, "_RANGE_BLOCK", 64)  # 64 bytes: many blocks, a short last one
    values = np.concatenate([_random(rng, dtype).ravel() for _ in range(2)])[:1001]
    values[517] = np.iinfo(values.dtype).min if values.dtype.kind != "f" else -1e30
    values[1000] = np.iinfo(values.dtype).max if values.dtype.kind != "f" else 1e30
    lo, hi = min_max(values)
    assert (lo, hi) == (values.min(), values.max()) and lo.dtype == values.dtype
    assert min_max(values[:3]) == (values[:3].min(), values[:3].max())  # under one block
    volume = values[:1000].reshape(10, 10, 10, order="F")  # 3D, Fortran-ordered: a view
    assert min_max(volume) == (volume.min(), volume.max())
    assert min_max(volume[:, ::2]) == (volume[:, ::2].min(), volume[:, ::2].max())
    if values.dtype.kind == "f":  # a NaN in any block, first or last included: both NaN
        for where in (0, 10, 517, 1000):
            with_nan = values.copy()
            with_nan[where] = np.nan
            assert all(np.isnan(min_max(with_nan))), where
    empty = min_max(values[:0])
    assert np.isnan(empty[0]) and np.isnan(empty[1])


@pytest.mark.parametrize("reader", ["read_volume", "read_header", "file_digest"])
@pytest.mark.parametrize("kind", ["socket", "folder"])
def test_a_socket_or_folder_is_refused_naming_it_and_what_it_is(tmp_path, reader, kind):
    import socket

    path = tmp_path / "odd.nii"
    if kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
    else:
        path.mkdir()
    expected = {"socket": "not a regular file (a socket)", "folder": "is a folder"}[kind]
    with pytest.raises(ValueError, match=re.escape(f"{path}: {expected}")):
        getattr(io, reader)(path)


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
    import tracemalloc

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
