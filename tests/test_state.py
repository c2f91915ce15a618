"""Map-reduce heatmaps: partial states, exact merges, and the chunked workflow."""

from __future__ import annotations

import json
import os
import re

import nibabel as nb
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from nipype_heatmap import MapOptions, accumulate_files, compute_heatmap
from nipype_heatmap.interfaces import HeatmapState, HeatmapVolume, MergeHeatmaps
from nipype_heatmap.io import statefile
from nipype_heatmap.state import load_state, merge_states, read_metadata, save_state
from nipype_heatmap.workflows import init_scaled_heatmap_wf
from nipype_heatmap.workflows.scaled_heatmap import _split_chunks

from .conftest import SHAPE, default_affine

PLUGINS = [
    pytest.param("Linear", {}, id="Linear"),
    pytest.param("MultiProc", {"n_procs": 2}, id="MultiProc"),
]


@pytest.fixture
def mixed_nan_inputs(make_nifti, rng):
    """Masks, a scaled int16 map and float32 maps with NaN and Inf, on one grid."""
    files = [make_nifti(f"a{i}.nii.gz") for i in range(3)]
    files.append(
        make_nifti(
            "b.nii.gz", rng.integers(-50, 50, SHAPE).astype(np.int16), slope=0.02, inter=0.1
        )
    )
    for i in range(3):
        data = rng.random(SHAPE).astype(np.float32)
        data[rng.random(SHAPE) < 0.2] = np.nan
        data[0, 0, i] = np.inf
        files.append(make_nifti(f"c{i}.nii.gz", data))
    return [str(f) for f in files]


def _accumulate(files):
    return accumulate_files(files, digests=True)


def test_state_round_trip(mixed_nan_inputs, tmp_path):
    acc = _accumulate(mixed_nan_inputs)
    state = save_state(acc, tmp_path / "part.nii.gz")
    meta = json.loads(read_metadata(state))
    assert meta["Format"] == "nipype_heatmap.state" and meta["FormatVersion"] == 3
    assert [s["Path"] for s in meta["Sources"]] == mixed_nan_inputs
    assert meta["Volumes"] == ["sum", "count"]
    img = nb.load(state)  # inspectable with any NIfTI tool
    assert img.shape == (*SHAPE, 2) and img.get_data_dtype() == np.float64
    back = load_state(state)
    assert back.n_inputs == acc.n_inputs and back.sources == acc.sources
    assert back.records == acc.records
    assert back.global_range == acc.global_range
    assert_array_equal(back.sum.values, acc.sum.values)
    assert_array_equal(back.count.value, acc.count.value)
    assert back.reference.header.binaryblock == acc.reference.header.binaryblock


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 7])
@pytest.mark.parametrize("flags", [(True, True, False), (False, False, False), (True, True, True)])
def test_merged_states_equal_single_pass(mixed_nan_inputs, tmp_path, chunk_size, flags):
    chunks = _split_chunks(mixed_nan_inputs, chunk_size)
    states = [
        save_state(_accumulate(chunk), tmp_path / f"p{i}.nii.gz") for i, chunk in enumerate(chunks)
    ]
    merged = merge_states(states).map_image(MapOptions(*flags))
    single = compute_heatmap(mixed_nan_inputs, *flags)
    assert_allclose(
        np.asanyarray(merged.dataobj), np.asanyarray(single.dataobj), rtol=1e-6, atol=1e-7
    )
    assert merged.header["descrip"] == single.header["descrip"]
    assert_array_equal(merged.affine, single.affine)


def test_merged_masks_are_exact(make_nifti, tmp_path):
    files = [str(make_nifti(f"m{i}.nii.gz")) for i in range(6)]
    states = [
        save_state(_accumulate(files[i : i + 2]), tmp_path / f"p{i}.nii.gz") for i in (0, 2, 4)
    ]
    merged = merge_states(states).map_image(MapOptions(False, False))
    assert_array_equal(
        np.asanyarray(merged.dataobj), np.asanyarray(compute_heatmap(files, False, False).dataobj)
    )


def test_state_of_another_grid_is_named(make_nifti, tmp_path):
    a = save_state(_accumulate([make_nifti("a.nii.gz")]), tmp_path / "a_state.nii.gz")
    other = make_nifti("b.nii.gz", np.zeros((7, 8, 10), np.uint8))
    b = save_state(_accumulate([other]), tmp_path / "b_state.nii.gz")
    with pytest.raises(ValueError, match=re.escape(str(b)) + ".*one grid"):
        merge_states([a, b])


def _rewrite_metadata(state, change):
    """Rewrite a state's metadata: ``change(meta)`` gives a dict (written with a checksum
    recomputed over it and the voxels, so that the state's validation, not only its
    checksum, is what refuses it), text (written as it is), or None (no metadata)."""
    img = nb.load(state)
    data = np.asanyarray(img.dataobj)
    new = change(json.loads(read_metadata(state)))
    if isinstance(new, dict):
        flat = data.reshape(-1, order="F")
        stored = flat.astype(flat.dtype.newbyteorder("<"), copy=False)
        new["Checksum"] = statefile.checksum(new, [memoryview(stored)])
        new = json.dumps(new, separators=(",", ":"))
    img.header.extensions.clear()
    if new is not None:
        img.header.extensions.append(nb.nifti1.Nifti1Extension(6, new.encode()))
    nb.Nifti1Image(data, img.affine, img.header).to_filename(state)


@pytest.mark.parametrize(
    "damage",
    [
        "missing",
        "no_metadata",
        "bad_json",
        "other_format",
        "newer_version",
        "truncated",
        "shape",
        "affine",
        "sources_count",
        "count_above_n",
    ],
)
def test_corrupt_state_gives_a_clear_error(make_nifti, tmp_path, damage):
    state = save_state(_accumulate([make_nifti("a.nii.gz")]), tmp_path / "s.nii.gz")
    if damage == "missing":
        os.unlink(state)
    elif damage == "no_metadata":
        _rewrite_metadata(state, lambda meta: None)
    elif damage == "bad_json":
        _rewrite_metadata(state, lambda meta: '{"Format": "nipype_heatmap.state", oops')
    elif damage == "other_format":
        _rewrite_metadata(state, lambda meta: {**meta, "Format": "x nipype_heatmap.state"})
    elif damage == "newer_version":
        _rewrite_metadata(state, lambda meta: {**meta, "FormatVersion": 99})
    elif damage == "truncated":
        raw = open(state, "rb").read()
        open(state, "wb").write(raw[: len(raw) // 2])
    elif damage == "shape":
        _rewrite_metadata(state, lambda meta: {**meta, "Shape": [7, 8, 10]})
    elif damage == "affine":  # same shape, the metadata's grid moved by 1 mm
        moved = np.asarray(json.loads(read_metadata(state))["Affine"])
        moved[0, 3] += 1.0
        _rewrite_metadata(state, lambda meta: {**meta, "Affine": moved.tolist()})
    elif damage == "sources_count":
        _rewrite_metadata(state, lambda meta: {**meta, "Sources": ["a", "b"]})
    else:
        _rewrite_metadata(state, lambda meta: {**meta, "NInputs": 0, "Sources": []})
    expected = FileNotFoundError if damage == "missing" else ValueError
    with pytest.raises(expected, match=re.escape(str(state))):
        load_state(state)


def test_merge_of_nothing_is_refused():
    with pytest.raises(ValueError, match="nothing to merge"):
        merge_states([])


def test_split_chunks():
    assert _split_chunks(["a", "b", "c"], 2) == [["a", "b"], ["c"]]
    assert _split_chunks(["a", "b"], 5) == [["a", "b"]]
    with pytest.raises(ValueError, match="no input"):
        _split_chunks([], 2)


def test_chunk_size_must_be_positive():
    with pytest.raises(ValueError, match="chunk_size"):
        init_scaled_heatmap_wf(chunk_size=0)


def test_partial_and_merge_interfaces(mixed_nan_inputs, tmp_path):
    states = []
    for i, chunk in enumerate(_split_chunks(mixed_nan_inputs, 3)):
        cwd = tmp_path / f"part{i}"
        cwd.mkdir()
        res = HeatmapState(in_files=chunk).run(cwd=str(cwd))
        assert res.outputs.n_inputs == len(chunk)
        states.append(res.outputs.out_file)
    (tmp_path / "merge").mkdir()
    out = MergeHeatmaps(in_files=states, use_mean=False).run(cwd=str(tmp_path / "merge"))
    assert out.outputs.n_inputs == len(mixed_nan_inputs)
    assert out.outputs.input_files == mixed_nan_inputs
    assert_allclose(
        nb.load(out.outputs.out_file).get_fdata(),
        compute_heatmap(mixed_nan_inputs, use_mean=False).get_fdata(),
        rtol=1e-6,
    )


def run_scaled_and_single(files, tmp_path, chunk_size, plugin, plugin_args, poll_sleep=0.1):
    """Run the map-reduce workflow and a single HeatmapVolume node; return both outputs."""
    wf = init_scaled_heatmap_wf(chunk_size=chunk_size, name=f"scaled_{chunk_size}_wf")
    wf.base_dir = str(tmp_path / "work")
    wf.config["execution"]["poll_sleep_duration"] = poll_sleep
    wf.inputs.inputnode.in_files = files
    graph = wf.run(plugin=plugin, plugin_args=plugin_args)
    (merge,) = [n for n in graph.nodes() if n.name == "merge_heatmaps"]
    cwd = tmp_path / "single"
    cwd.mkdir(exist_ok=True)
    single = HeatmapVolume(in_files=files).run(cwd=str(cwd)).outputs
    return merge.result.outputs, single


def assert_same_heatmap(scaled, single):
    assert scaled.n_inputs == single.n_inputs
    assert scaled.input_files == single.input_files
    a, b = nb.load(scaled.out_file), nb.load(single.out_file)
    assert_allclose(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj), rtol=1e-6, atol=1e-7)
    for field in ("dim", "pixdim", "qform_code", "sform_code", "srow_x", "xyzt_units", "descrip"):
        assert_array_equal(a.header[field], b.header[field])


@pytest.mark.parametrize("chunk_size", [1, 3, 100])
@pytest.mark.parametrize(("plugin", "plugin_args"), PLUGINS)
def test_scaled_workflow_equals_single_node(
    mixed_nan_inputs, tmp_path, chunk_size, plugin, plugin_args
):
    scaled, single = run_scaled_and_single(
        mixed_nan_inputs, tmp_path, chunk_size, plugin, plugin_args
    )
    assert_same_heatmap(scaled, single)


@pytest.mark.slurm
@pytest.mark.slow
def test_scaled_workflow_on_a_real_slurm_cluster(slurm_cluster, mixed_nan_inputs, tmp_path):
    plugin_args = {"sbatch_args": "--ntasks=1 --cpus-per-task=1 --mem=1G", "max_tries": 2}
    scaled, single = run_scaled_and_single(
        mixed_nan_inputs, tmp_path, 3, "SLURM", plugin_args, poll_sleep=0.5
    )
    assert_same_heatmap(scaled, single)
    # The chunks really ran as SLURM jobs: each MapNode subnode wrote a batch script.
    scripts = list((tmp_path / "work").rglob("batchscript_*.sh"))
    assert len(scripts) >= 3, f"expected SLURM batch scripts, found {scripts}"


def _flipped_copy(path, out):
    """The same image stored with its first voxel axis flipped, on the same world grid."""
    img = nb.load(path)
    data = np.flip(np.asanyarray(img.dataobj), axis=0).copy()
    flip = np.eye(4)
    flip[0, 0] = -1
    flip[0, 3] = img.shape[0] - 1
    nb.Nifti1Image(data, img.affine @ flip, dtype=data.dtype).to_filename(out)
    return str(out)


@pytest.mark.parametrize("chunk_size", [1, 2, 3])
def test_chunks_starting_with_a_reoriented_file_merge_like_a_single_node(
    mixed_nan_inputs, tmp_path, chunk_size
):
    files = list(mixed_nan_inputs)
    for index in range(1, len(files), 2):  # every other file stored flipped
        files[index] = _flipped_copy(files[index], tmp_path / f"flipped{index}.nii.gz")
    states = []
    for start in range(0, len(files), chunk_size):
        acc = _accumulate(files[start : start + chunk_size])
        states.append(save_state(acc, tmp_path / f"part{start}.nii.gz"))
    merged = merge_states(states).map_image(MapOptions())
    single = compute_heatmap(files)
    assert_allclose(merged.get_fdata(), single.get_fdata(), rtol=1e-6, equal_nan=True)
    assert_array_equal(merged.affine, single.affine)


def test_partial_of_a_shifted_grid_is_refused_naming_it(make_nifti, tmp_path):
    a = _accumulate([make_nifti("a.nii.gz")])
    shifted = np.eye(4) * 2
    shifted[3, 3] = 1
    shifted[:3, 3] = [-6.0, -8.0, -8.5]  # half a voxel off the grid of a
    b = _accumulate([make_nifti("b.nii.gz", affine=shifted)])
    first = save_state(a, tmp_path / "a_part.nii.gz")
    second = save_state(b, tmp_path / "b_part.nii.gz")
    with pytest.raises(ValueError, match=re.escape(str(second))):
        merge_states([first, second])


# -- damaged or edited states: refused naming the file, whatever the damage ------------------
@pytest.fixture
def states(make_nifti, rng, tmp_path):
    """A state of each form (overlap and spread tracked): masks (only a sum, uint8),
    integers (sum, non-zero count and exact squares) and floats with missing values (sum,
    count, non-zero count and M2, float64)."""
    made = {}
    for kind in ("masks", "integers", "floats"):
        files = []
        for i in range(3):
            if kind == "masks":
                data = (rng.random(SHAPE) > 0.6).astype(np.uint8)
            elif kind == "integers":
                data = rng.integers(-5, 9, SHAPE).astype(np.int16)
            else:
                data = rng.random(SHAPE).astype(np.float32) + 0.5
                data[rng.random(SHAPE) < 0.2] = np.nan
            files.append(make_nifti(f"{kind}{i}.nii.gz", data))
        acc = accumulate_files(files, digests=True, overlap=True, spread=True)
        made[kind] = save_state(acc, tmp_path / f"{kind}_state.nii.gz")
    return made


def _edited(state, tmp_path, change, data_change=None):
    """A copy of a state with its metadata (and voxels) changed, re-signed: the checksum
    matches, so what refuses it is the state's validation."""
    copy = tmp_path / "edited.nii.gz"
    copy.write_bytes(open(state, "rb").read())
    if data_change is not None:
        img = nb.load(copy)
        data = np.asanyarray(img.dataobj).copy()
        data_change(data, json.loads(read_metadata(copy))["Volumes"])
        nb.Nifti1Image(data, img.affine, img.header).to_filename(copy)
    _rewrite_metadata(copy, change)
    return copy


def _source(index, **fields):
    def change(meta):
        meta["Sources"][index].update(fields)
        return meta

    return change


def _field(key, **fields):
    def change(meta):
        meta[key] = {**meta[key], **fields}
        return meta

    return change


def _garbage_header(length=348):
    import base64

    return base64.b64encode(b"x" * length).decode("ascii")


def _other_header(block, index=1):
    """Give the source at ``index`` a header block of its own (bytes)."""
    import base64

    def change(meta):
        meta["Headers"].append(base64.b64encode(block).decode("ascii"))
        meta["Sources"][index]["Header"] = len(meta["Headers"]) - 1
        return meta

    return change


def _header_of(shape=SHAPE, affine=None, **fields):
    header = nb.Nifti1Image(
        np.zeros(shape, np.uint8), default_affine() if affine is None else affine
    ).header
    for key, value in fields.items():
        header[key] = value
    return header.binaryblock


def _half_a_voxel_off():
    affine = default_affine()
    affine[0, 3] += 1.0  # voxels of 2 mm
    return affine


def _volume(name, value):
    def change(data, names):
        data[1, 2, 3, names.index(name)] = value

    return change


# (kind of state, metadata change, voxel change, what the message says)
DAMAGES = {
    "range narrowed (masks)": ("masks", _source(1, Range=[0.0, 0.0]), None, "a sum from"),
    "range narrowed (integers)": ("integers", _source(0, Range=[0.0, 1.0]), None, "sum"),
    "range narrowed (floats)": ("floats", _source(2, Range=[0.5, 0.6]), None, "a sum larger"),
    "range not finite": ("integers", _source(0, Range=[0.0, float("inf")]), None, "Range"),
    "range not a pair": ("floats", _source(0, Range=[0.5]), None, "the Range of a source"),
    "exact sum of floats": ("floats", _field("Sum", Exact=True), None, "an exact sum of non"),
    "negative rounding": ("floats", _field("Sum", Rounding=-1.0), None, "the Sum fields"),
    "binary spread of integers": (
        "integers",
        _field("CohortStats", SpreadForm="binary"),
        None,
        "the squares volume",
    ),
    "binary spread, non-binary sources": (
        "masks",
        lambda m: _field("CohortStats", Overlap=False)(_source(0, Range=[0.0, 2.0])(m)),
        None,
        "a binary spread of inputs that are not binary masks",
    ),
    "NInputs above the sources": (
        "masks",
        lambda m: {**m, "NInputs": m["NInputs"] + 1},
        None,
        "NInputs 4 with 3 sources",
    ),
    "NInputs below the sources": (
        "floats",
        lambda m: {**m, "NInputs": 2},
        None,
        "NInputs 2 with 3 sources",
    ),
    "sum outside its inputs' bounds": ("masks", None, _volume("sum", 4), "a sum from 0 to 4"),
    "float sum beyond its magnitude": ("floats", None, _volume("sum", 1e6), "a sum larger"),
    "count above NInputs": ("floats", None, _volume("count", 4.0), "a count from"),
    "count not whole": ("floats", None, _volume("count", 1.5), "a count that is not whole"),
    "nonzero above NInputs": ("integers", None, _volume("nonzero", 7), "a nonzero count from"),
    "negative squares": ("integers", None, _volume("squares", -1), "a sum of squares from"),
    "negative m2": ("floats", None, _volume("m2", -1e-3), "a negative or non-finite M2"),
    "m2 not finite": ("floats", None, _volume("m2", np.inf), "a negative or non-finite M2"),
    "ReferenceHeader not base64": (
        "masks",
        lambda m: {**m, "ReferenceHeader": "@@"},
        None,
        "corrupt",
    ),
    "ReferenceHeader garbage": (
        "masks",
        lambda m: {**m, "ReferenceHeader": _garbage_header()},
        None,
        "corrupt",
    ),
    "ReferenceHeader too short": (
        "floats",
        lambda m: {**m, "ReferenceHeader": _garbage_header(40)},
        None,
        "corrupt",
    ),
    "ImageClass of another header size": (
        "integers",
        lambda m: {**m, "ImageClass": "Nifti2Image"},
        None,
        "corrupt",
    ),
    "a source header of garbage": ("masks", _other_header(b"x" * 348), None, "corrupt"),
    "a source header of another grid": (
        "floats",
        _other_header(_header_of((7, 8, 10))),
        None,
        "a source header not on the state's grid",
    ),
    "a source header moved off the grid": (
        "integers",
        _other_header(_header_of(affine=_half_a_voxel_off())),
        None,
        "a source header not on the state's grid",
    ),
    "a source ImageClass of another header size": (
        "masks",
        _source(2, ImageClass="Nifti2Image"),
        None,
        "corrupt",
    ),
    "a ReferenceHeader other than the first source's": (
        "floats",
        _other_header(_header_of(descrip=b"another header"), index=0),
        None,
        "a ReferenceHeader other than its first source's header",
    ),
    # fields of the wrong type (JSON that another tool or a hand edit wrote), which Python
    # would otherwise turn into something plausible: "None" as a path, "no" as true...
    "NInputs as text": ("masks", lambda m: {**m, "NInputs": "3"}, None, "NInputs"),
    "NInputs not whole": ("floats", lambda m: {**m, "NInputs": 3.5}, None, "NInputs"),
    "NInputs true": ("integers", lambda m: {**m, "NInputs": True}, None, "NInputs"),
    "Shape not whole": ("masks", lambda m: {**m, "Shape": [7.5, 8, 9]}, None, "Shape"),
    "a Path of null": ("masks", _source(1, Path=None), None, "Path"),
    "a Path that is a number": ("floats", _source(0, Path=7), None, "Path"),
    "a Digest that is a number": ("integers", _source(2, Digest=5), None, "Digest"),
    "Integer as text": ("floats", _source(0, Integer="no"), None, "Integer"),
    "a Header index as text": ("masks", _source(0, Header="0"), None, "Header"),
    "a negative Header index": ("masks", _source(0, Header=-1), None, "Header"),
    "an Identity of text": ("masks", _source(0, Identity=["1", "2"]), None, "Identity"),
    "SquareBound not whole": (
        "masks",
        _field("CohortStats", SquareBound=1.5),
        None,
        "SquareBound",
    ),
    "Overlap as text": ("masks", _field("CohortStats", Overlap="false"), None, "Overlap"),
    "Rounding as text": ("floats", _field("Sum", Rounding="0"), None, "Rounding"),
    "an integer source of a fractional Range": (
        "floats",
        lambda m: {**m, "Sources": [{**s, "Integer": True} for s in m["Sources"]]},
        None,
        "an integer source whose Range is not whole",
    ),
    "unknown ImageClass": ("masks", lambda m: {**m, "ImageClass": "MGHImage"}, None, "corrupt"),
    "volumes out of order": (
        "floats",
        lambda m: {**m, "Volumes": ["sum", "nonzero", "count", "m2"]},
        None,
        "volumes out of order",
    ),
    "volume not in the format": (
        "integers",
        lambda m: {**m, "Volumes": ["sum", "nonzero", "cubes"]},
        None,
        "unknown volumes",
    ),
    "fewer volumes than the data": (
        "integers",
        lambda m: {**m, "Volumes": ["sum", "nonzero"]},
        None,
        "the squares volume",
    ),
    "shape of another grid": ("masks", lambda m: {**m, "Shape": [9, 8, 7]}, None, "data"),
    "affine moved": (
        "floats",
        lambda m: {**m, "Affine": (np.asarray(m["Affine"]) + np.eye(4)).tolist()},
        None,
        "an affine other than",
    ),
    "a field missing": (
        "integers",
        lambda m: {k: v for k, v in m.items() if k != "Sum"},
        None,
        "corrupt",
    ),
    "sources not objects": ("masks", lambda m: {**m, "Sources": [1, 2, 3]}, None, "Sources of"),
    "metadata not an object": ("masks", lambda m: json.dumps([m]), None, "metadata"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_or_edited_state_is_refused_naming_it(states, tmp_path, damage):
    kind, change, data_change, what = DAMAGES[damage]
    edited = _edited(states[kind], tmp_path, change or (lambda meta: meta), data_change)
    with pytest.raises(ValueError, match=re.escape(str(edited)) + ".*" + re.escape(what)) as err:
        load_state(edited)
    assert type(err.value) is ValueError  # never another exception type, nor a subclass


@pytest.mark.parametrize("checksum", ["removed", "changed"])
def test_a_state_whose_checksum_was_removed_or_changed_is_refused(states, tmp_path, checksum):
    def change(meta):
        if checksum == "removed":
            del meta["Checksum"]
        else:
            meta["Checksum"] = "sha256:" + "0" * 64
        return json.dumps(meta)  # written as it is: not re-signed

    edited = _edited(states["floats"], tmp_path, change)
    with pytest.raises(ValueError, match=re.escape(str(edited)) + ": this state was changed"):
        load_state(edited)


def test_a_state_edited_without_a_new_checksum_is_refused(states, tmp_path):
    # the same edit as "range narrowed (floats)", but the checksum left as it was
    def change(meta):
        meta["Sources"][2]["Range"] = [0.5, 0.6]
        return json.dumps(meta)

    edited = _edited(states["floats"], tmp_path, change)
    with pytest.raises(ValueError, match=re.escape(str(edited)) + ": this state was changed"):
        load_state(edited)


# -- a newer format is refused as such ----------------------------------------------------
@pytest.mark.parametrize("version", [4, 99])
def test_a_state_of_a_newer_format_version_is_refused_as_newer(states, tmp_path, version):
    from nipype_heatmap.api import update_state

    edited = _edited(states["masks"], tmp_path, lambda meta: {**meta, "FormatVersion": version})
    before = edited.read_bytes()
    newer = re.escape(
        f"{edited}: state format version {version} is not 3; it was written by a newer"
    )
    for read in (load_state, _read_metadata_then_load, _merge_states_of_one):
        with pytest.raises(ValueError, match=newer):
            read(edited)
    with pytest.raises(ValueError, match=newer):
        update_state(edited, remove=[json.loads(read_metadata(edited))["Sources"][0]["Path"]])
    assert edited.read_bytes() == before


def _read_metadata_then_load(path):
    json.loads(read_metadata(path))  # the metadata reads (it is JSON): the version refuses
    return load_state(path)


def _merge_states_of_one(path):
    return merge_states([path])


def test_a_state_of_an_older_format_version_is_not_called_newer(states, tmp_path):
    edited = _edited(states["floats"], tmp_path, lambda meta: {**meta, "FormatVersion": 2})
    with pytest.raises(ValueError, match=re.escape(str(edited)) + ".*rebuild the state") as err:
        load_state(edited)
    assert "newer" not in str(err.value)
