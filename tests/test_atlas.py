"""Probabilistic atlases from label images, against a brute-force numpy reference."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from nipype_heatmap import atlas as at
from nipype_heatmap.accumulate import labels as label_counts
from nipype_heatmap.atlas.tables import _is_hex_color
from nipype_heatmap.cli.atlas import main as atlas_main

from .conftest import SHAPE, default_affine, fill_the_disk_at
from .test_cli import as_if_not_installed

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _on_reference_grid(path: str, ref_affine: np.ndarray) -> np.ndarray:
    """Brute force: each reference voxel's value, looked up through world coordinates."""
    img = nb.load(path)
    data = np.asanyarray(img.dataobj)
    ii, jj, kk = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    world = ref_affine @ np.stack([ii, jj, kk, np.ones_like(ii)]).reshape(4, -1)
    vox = np.rint(np.linalg.solve(img.affine, world)[:3]).astype(int)
    return data[vox[0], vox[1], vox[2]].reshape(SHAPE).astype(np.int64)


def _reference(paths, background=0, ref_affine=None):
    """Brute-force atlas: labels (union), dense counts, and max-prob maps per threshold."""
    ref_affine = default_affine() if ref_affine is None else ref_affine
    stack = np.stack([_on_reference_grid(str(p), ref_affine) for p in paths])
    labels = sorted(set(np.unique(stack).tolist()) - {background})
    counts = {label: (stack == label).sum(axis=0) for label in labels}
    return stack, labels, counts


def _maxprob(labels, counts, n, threshold, background=0):
    out = np.full(SHAPE, background, np.int64)
    best = np.zeros(SHAPE, np.int64)
    tied = np.zeros(SHAPE, bool)
    for label in labels:  # ascending: a later label wins only when strictly higher
        c = counts[label]
        tied = np.where(c > best, False, tied | ((c == best) & (c > 0)))
        out = np.where(c > best, label, out)
        best = np.maximum(best, c)
    keep = (best > 0) & (best * 100 >= threshold * n)
    return np.where(keep, out, background), int((keep & tied).sum())


@pytest.fixture
def label_files(make_nifti, rng):
    """Six label images: label 7 absent from the first, 300 (needs int16) in the fourth."""

    def make(dtype=np.int16, n=6):
        files = []
        for i in range(n):
            data = rng.choice([0, 0, 1, 2, 3, 5], size=SHAPE)
            if i == 0:
                data[data == 5] = 3  # the first input lacks label 5 ...
            if i in (2, 4):
                data[:2, :2, :2] = 7  # ... and label 7
            if i == 3 and np.iinfo(dtype).max >= 300:
                data[3, 3, 3] = 300
            files.append(str(make_nifti(f"seg{i}.nii.gz", data.astype(dtype))))
        return files

    return make


def test_probability_and_max_probability_maps_match_brute_force(label_files):
    files = label_files()
    acc = at.accumulate_labels(files)
    sparse = acc.to_sparse()
    stack, labels, counts = _reference(files)
    assert sparse.label_list == labels == [1, 2, 3, 5, 7, 300]  # union, not the first's
    n = len(files)
    dense = sparse.probabilities()
    for i, label in enumerate(labels):
        expected = (counts[label] / n).astype(np.float32)
        np.testing.assert_array_equal(dense[..., i], expected)
        np.testing.assert_array_equal(acc.probability_of(label), expected)
        assert sparse.presence[label] == int((stack == label).any(axis=(1, 2, 3)).sum())
    for threshold in (0, 25, 50, 33.4, 100):
        want, want_tied = _maxprob(labels, counts, n, threshold)
        for source in (sparse, acc):  # from the sparse form and straight from the boxes
            got, tied = source.max_probability(threshold)
            np.testing.assert_array_equal(got, want)
            assert tied == want_tied
    from_boxes = b"".join(bytes(v) for v in acc.iter_probabilities())
    from_sparse = b"".join(bytes(v) for v in sparse.iter_probabilities())
    assert from_boxes == from_sparse == np.asfortranarray(dense).tobytes(order="F")
    assert acc.totals() == sparse.totals() == {k: int(v.sum()) for k, v in counts.items()}
    assert sparse.max_probability(0)[1] > 0  # this data has ties, so they were exercised


def test_ties_go_to_the_lowest_label_and_are_counted(make_nifti):
    a = np.zeros(SHAPE, np.uint8)
    b = np.zeros(SHAPE, np.uint8)
    a[0, 0, 0], b[0, 0, 0] = 9, 4  # a 50/50 tie: 4 wins although 9 came first
    a[1, 0, 0], b[1, 0, 0] = 6, 6  # no tie
    files = [str(make_nifti("a.nii", a)), str(make_nifti("b.nii", b))]
    sparse = at.accumulate_labels(files).to_sparse()
    dseg, tied = sparse.max_probability(50)
    assert dseg[0, 0, 0] == 4 and dseg[1, 0, 0] == 6 and tied == 1
    dseg, tied = sparse.max_probability(50.1)  # 50 % does not reach 50.1 %
    assert dseg[0, 0, 0] == 0 and dseg[1, 0, 0] == 6 and tied == 0


def test_threshold_comparison_is_exact_for_thirds(make_nifti):
    # 1 of 3 inputs is 33.33...%: kept at 33.3, dropped at 33.34 (no float round-off)
    datas = [np.zeros(SHAPE, np.uint8) for _ in range(3)]
    datas[0][2, 2, 2] = 1
    files = [str(make_nifti(f"t{i}.nii", d)) for i, d in enumerate(datas)]
    sparse = at.accumulate_labels(files).to_sparse()
    assert sparse.max_probability(33.3)[0][2, 2, 2] == 1
    assert sparse.max_probability(33.34)[0][2, 2, 2] == 0


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]
)
def test_every_integer_width_gives_the_reference(label_files, dtype):
    files = label_files(dtype=dtype, n=3)
    sparse = at.accumulate_labels(files).to_sparse()
    _, labels, counts = _reference(files)
    assert sparse.label_list == labels
    for label in labels:
        np.testing.assert_array_equal(sparse.counts_of(label), counts[label])


def test_reoriented_inputs_are_counted_on_the_reference_grid(make_nifti, rng):
    datas = [rng.integers(0, 4, SHAPE).astype(np.int16) for _ in range(3)]
    files = [str(make_nifti("r0.nii.gz", datas[0]))]
    flipped = default_affine().copy()  # x axis flipped, the same world grid
    flipped[0, 0] = -2.0
    flipped[0, 3] = -6.0 + 2.0 * (SHAPE[0] - 1)
    files.append(str(make_nifti("r1.nii.gz", datas[1][::-1], affine=flipped)))
    swapped = default_affine()[:, [1, 0, 2, 3]]  # axes i and j swapped
    files.append(str(make_nifti("r2.nii.gz", datas[2].transpose(1, 0, 2), affine=swapped)))
    sparse = at.accumulate_labels(files).to_sparse()
    for label in (1, 2, 3):
        want = sum((d == label).astype(int) for d in datas)
        np.testing.assert_array_equal(sparse.counts_of(label), want)
    _, _, counts = _reference(files)  # and the world-coordinate brute force agrees
    np.testing.assert_array_equal(sparse.counts_of(2), counts[2])


def test_labels_stored_as_whole_floats_are_accepted_and_fractions_refused(make_nifti):
    whole = np.zeros(SHAPE, np.float32)
    whole[0, 0, 0] = 17.0
    ok = str(make_nifti("whole.nii", whole, dtype=np.float32))
    frac = whole.copy()
    frac[1, 2, 3] = 0.5
    bad = str(make_nifti("frac.nii", frac, dtype=np.float32))
    assert at.accumulate_labels([ok]).to_sparse().label_list == [17]
    with pytest.raises(
        ValueError, match=r"frac\.nii: not a label image: value 0\.5 at voxel \(1, 2, 3\)"
    ):
        at.accumulate_labels([ok, bad])
    nan = whole.copy()
    nan[0, 1, 0] = np.nan
    with pytest.raises(ValueError, match="nan.nii: not a label image"):
        at.accumulate_labels([str(make_nifti("nan.nii", nan, dtype=np.float32))])


def test_background_option_excludes_another_value(make_nifti):
    data = np.full(SHAPE, 255, np.uint8)
    data[0, 0, 0] = 0  # 0 is a label here
    sparse = at.accumulate_labels([str(make_nifti("b.nii", data))], background=255).to_sparse()
    assert sparse.label_list == [0]
    dseg, _ = sparse.max_probability(0)
    assert dseg[0, 0, 0] == 0 and dseg[1, 1, 1] == 255


def test_grid_mismatch_names_the_file(make_nifti):
    a = str(make_nifti("a.nii", np.ones(SHAPE, np.uint8)))
    shifted = default_affine()
    shifted[0, 3] += 1.0
    b = str(make_nifti("b.nii", np.ones(SHAPE, np.uint8), affine=shifted))
    with pytest.raises(ValueError, match=r"b\.nii: affine"):
        at.accumulate_labels([a, b])


def test_memory_follows_the_labels_not_labels_times_grid(make_nifti):
    big = (40, 40, 40)
    files = []
    for i in range(3):  # 40 one-voxel labels, moving one voxel along k per input
        data = np.zeros(big, np.int32)
        for label in range(1, 41):
            data[label - 1, 20, 5 + i] = label
        files.append(str(make_nifti(f"m{i}.nii", data, affine=np.eye(4))))
    acc = at.accumulate_labels(files)
    box_voxels = sum(counts.size for _, counts in acc.boxes.values())
    margin = label_counts._BOX_MARGIN
    assert len(acc.boxes) == 40
    assert box_voxels <= 40 * (1 + 2 * margin) ** 2 * (3 + 2 * margin)  # not 40 x 64000
    for label in (1, 40):
        want = np.zeros(big, np.uint32)
        want[label - 1, 20, 5:8] = 1
        np.testing.assert_array_equal(acc.counts_of(label), want)


def test_sparse_atlas_round_trips_exactly_and_answers_queries(label_files, tmp_path):
    files = label_files()
    sparse = at.accumulate_labels(files).to_sparse()
    path = at.save_atlas(sparse, tmp_path / "a_desc-sparse_probseg.nii.gz")
    loaded = at.load_atlas(path)
    assert loaded.label_list == sparse.label_list and loaded.n_inputs == 6
    np.testing.assert_array_equal(loaded.probabilities(), sparse.probabilities())
    assert [r.path for r in loaded.records] == files
    # volume 0 of the file is the max-probability map at 0 %
    slot0 = np.asanyarray(nb.load(path).dataobj)[..., 0]
    np.testing.assert_array_equal(slot0, sparse.max_probability(0)[0])
    # a query at the world coordinate of voxel (3, 3, 3)
    xyz = (default_affine() @ [3, 3, 3, 1])[:3]
    answer = loaded.query(xyz)
    stack, labels, counts = _reference(files)
    want = sorted(
        ((label, counts[label][3, 3, 3]) for label in labels if counts[label][3, 3, 3]),
        key=lambda item: (-item[1], item[0]),
    )
    assert [label for label, _ in answer] == [label for label, _ in want]
    assert [p for _, p in answer] == [float(np.float32(c / 6)) for _, c in want]
    assert loaded.query(xyz + 1000) == []  # outside the grid


def test_not_a_sparse_atlas_is_refused(make_nifti):
    path = str(make_nifti("plain.nii.gz"))
    with pytest.raises(ValueError, match="plain.nii.gz: not a nipype_heatmap sparse atlas"):
        at.load_atlas(path)


@pytest.mark.parametrize("chunk", [1, 2, 4])
def test_partial_atlases_merge_to_the_single_pass(label_files, tmp_path, chunk):
    files = label_files()
    whole = at.accumulate_labels(files).to_sparse()
    parts = []
    for n, start in enumerate(range(0, len(files), chunk)):
        part = at.accumulate_labels(files[start : start + chunk]).to_sparse()
        parts.append(at.save_atlas(part, tmp_path / f"p{n}.nii.gz"))
    merged = at.merge_atlases(parts).to_sparse()
    assert merged.label_list == whole.label_list
    assert merged.presence == whole.presence
    np.testing.assert_array_equal(merged.index, whole.index)
    np.testing.assert_array_equal(merged.labels, whole.labels)
    np.testing.assert_array_equal(merged.counts, whole.counts)
    assert [r.path for r in merged.records] == files


def test_merging_a_partial_on_a_reoriented_reference_gives_the_single_pass(
    make_nifti, rng, tmp_path
):
    datas = [rng.integers(0, 3, SHAPE).astype(np.uint8) for _ in range(2)]
    flipped = default_affine().copy()
    flipped[0, 0] = -2.0
    flipped[0, 3] = -6.0 + 2.0 * (SHAPE[0] - 1)
    a = str(make_nifti("a.nii", datas[0]))
    b = str(make_nifti("b.nii", datas[1][::-1], affine=flipped))
    whole = at.accumulate_labels([a, b]).to_sparse()
    parts = [
        at.save_atlas(at.accumulate_labels([f]).to_sparse(), tmp_path / f"{i}.nii")
        for i, f in enumerate([a, b])
    ]
    merged = at.merge_atlases(parts).to_sparse()
    for label in (1, 2):
        np.testing.assert_array_equal(merged.counts_of(label), whole.counts_of(label))


def test_label_tables_bids_and_freesurfer(tmp_path, label_files):
    bids = tmp_path / "dseg.tsv"
    bids.write_text("index\tname\tcolor\n1\tCSF\t#112233\n2\tGM\t#445566\n3\tWM\t\n")
    lut = tmp_path / "FreeSurferColorLUT.txt"
    lut.write_text(
        "# comment\n\n0  Unknown 0 0 0 0\n2  Left-Cerebral-White-Matter 245 245 245 0\n"
    )
    assert at.read_label_table(bids)[1] == at.LabelInfo("CSF", "#112233")
    assert at.read_label_table(bids)[3] == at.LabelInfo("WM", None)
    assert at.read_label_table(lut)[2] == at.LabelInfo("Left-Cerebral-White-Matter", "#f5f5f5")
    dup = tmp_path / "dup.tsv"
    dup.write_text("index\tname\n1\ta\n1\tb\n")
    with pytest.raises(ValueError, match=r"dup.tsv, line 3: label 1 is listed twice"):
        at.read_label_table(dup)
    junk = tmp_path / "junk.txt"
    junk.write_text("hello world\n")
    with pytest.raises(ValueError, match=r"junk.txt, line 1: expected"):
        at.read_label_table(junk)
    sparse = at.accumulate_labels(label_files()).to_sparse()
    rows = at.label_rows(sparse, at.read_label_table(bids))
    assert [r["name"] for r in rows] == ["CSF", "GM", "WM", "5", "7", "300"]
    assert rows[0]["color"] == "#112233" and rows[3]["color"].startswith("#")


def test_write_atlas_files_names_sidecars_and_table(label_files, tmp_path):
    files = label_files()
    sparse = at.accumulate_labels(files).to_sparse()
    written = at.write_atlas(sparse, tmp_path / "out", atlas_name="Test", sparse=True)
    assert sorted(os.path.basename(p) for p in written.values()) == sorted(
        [
            "atlas-Test_probseg.nii.gz",
            "atlas-Test_desc-th0_dseg.nii.gz",
            "atlas-Test_desc-th25_dseg.nii.gz",
            "atlas-Test_desc-th50_dseg.nii.gz",
            "atlas-Test_dseg.tsv",
            "atlas-Test_desc-sparse_probseg.nii.gz",
        ]
    )
    img = nb.load(written["probseg"])
    assert img.shape == (*SHAPE, 6) and img.get_data_dtype() == np.float32
    np.testing.assert_allclose(img.affine, default_affine())
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), sparse.probabilities())
    th25 = nb.load(written["th25"])
    np.testing.assert_array_equal(np.asanyarray(th25.dataobj), sparse.max_probability(25)[0])
    assert th25.header.get_intent()[0] == "label"
    side = json.loads((tmp_path / "out" / "atlas-Test_desc-th25_dseg.json").read_text())
    assert side["SampleSize"] == 6 and side["Threshold"] == 25.0 and side["Sources"] == files
    assert side["TiedVoxels"] == sparse.max_probability(25)[1]
    lines = (tmp_path / "out" / "atlas-Test_dseg.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["index", "name", "color", "n_inputs", "mean_volume_mm3"]
    stack, labels, counts = _reference(files)
    row = dict(zip(lines[0].split("\t"), lines[1].split("\t"), strict=True))
    assert int(row["index"]) == 1 and int(row["n_inputs"]) == 6
    assert float(row["mean_volume_mm3"]) == pytest.approx(counts[1].sum() * 8.0 / 6)


def test_threshold_names_and_bad_names(tmp_path):
    assert at.atlas_names("X", [12.5])["th12p5"] == "atlas-X_desc-th12p5_dseg.nii.gz"
    with pytest.raises(ValueError, match="letters and digits"):
        at.atlas_names("my_atlas", [0])
    with pytest.raises(ValueError, match="not a percentage"):
        at.atlas_names("X", [150])
    for beyond in (100.5, -0.5):  # just outside 0..100
        with pytest.raises(ValueError, match="not a percentage"):
            at.atlas_names("X", [beyond])


def test_cli_writes_the_atlas_and_merges_partials(label_files, tmp_path, capsys):
    files = label_files()
    folder = os.path.dirname(files[0])
    assert atlas_main([folder, "-o", str(tmp_path / "one"), "-q", "--sparse", "--dense"]) == 0
    one = at.load_atlas(tmp_path / "one" / "atlas-heatmap_desc-sparse_probseg.nii.gz")
    parts = []
    for n, chunk in enumerate([files[:2], files[2:]]):
        assert (
            atlas_main([*chunk, "-o", str(tmp_path / f"p{n}"), "-q", "--sparse", "--no-maps"]) == 0
        )
        assert sorted(os.listdir(tmp_path / f"p{n}")) == [
            "atlas-heatmap_desc-sparse_probseg.json",
            "atlas-heatmap_desc-sparse_probseg.nii.gz",
            "atlas-heatmap_dseg.tsv",
        ]
        parts.append(str(tmp_path / f"p{n}" / "atlas-heatmap_desc-sparse_probseg.nii.gz"))
    assert atlas_main(["--merge", *parts, "-o", str(tmp_path / "merged"), "-q"]) == 0
    merged = nb.load(tmp_path / "merged" / "atlas-heatmap_probseg.nii.gz")
    np.testing.assert_array_equal(np.asanyarray(merged.dataobj), one.probabilities())
    capsys.readouterr()


def test_cli_errors_name_the_file_and_write_nothing(make_nifti, tmp_path, capsys):
    good = str(make_nifti("good.nii", np.ones(SHAPE, np.uint8)))
    bad = str(make_nifti("prob.nii", np.full(SHAPE, 0.3, np.float32), dtype=np.float32))
    out = tmp_path / "out"
    assert atlas_main([good, bad, "-o", str(out)]) == 1
    assert "prob.nii: not a label image" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    with pytest.raises(SystemExit) as exc:
        atlas_main(["-o", str(out)])
    assert exc.value.code == 2


def test_cli_rerun_into_the_input_folder_skips_its_own_outputs(make_nifti, in_dir, capsys):
    for i in range(2):
        make_nifti(f"s{i}.nii.gz", np.full(SHAPE, i + 1, np.uint8))
    assert atlas_main([str(in_dir), "-o", str(in_dir), "-q"]) == 0
    first = np.asanyarray(nb.load(in_dir / "atlas-heatmap_probseg.nii.gz").dataobj).copy()
    assert atlas_main([str(in_dir), "-o", str(in_dir), "-q"]) == 0  # dseg maps not re-read
    again = np.asanyarray(nb.load(in_dir / "atlas-heatmap_probseg.nii.gz").dataobj)
    np.testing.assert_array_equal(first, again)
    assert first.shape == (*SHAPE, 2)
    capsys.readouterr()


def test_label_atlas_node_and_map_reduce_workflow_give_the_same_atlas(
    label_files, tmp_path, monkeypatch
):
    from nipype_heatmap.interfaces import LabelAtlas
    from nipype_heatmap.workflows import init_scaled_atlas_wf

    files = label_files()
    monkeypatch.chdir(tmp_path)  # a failing node's crash file lands here, not in the repo
    (tmp_path / "n").mkdir()
    single = LabelAtlas(in_files=files, sparse=True, atlas_name="One").run(cwd=str(tmp_path / "n"))
    out = single.outputs
    assert out.n_inputs == 6 and out.labels == [1, 2, 3, 5, 7, 300]
    assert [os.path.basename(f) for f in out.dseg_files] == [
        f"atlas-One_desc-th{t}_dseg.nii.gz" for t in (0, 25, 50)
    ]
    wf = init_scaled_atlas_wf(chunk_size=4, sparse=True, atlas_name="One")
    wf.base_dir = str(tmp_path / "work")
    wf.config["execution"]["crashdump_dir"] = str(tmp_path)
    wf.inputs.inputnode.in_files = files
    graph = wf.run()
    merged = next(n for n in graph.nodes() if n.name == "label_atlas").result.outputs
    assert merged.n_inputs == 6 and merged.labels == out.labels
    for a, b in [
        (merged.probseg_file, out.probseg_file),
        *zip(merged.dseg_files, out.dseg_files, strict=True),
    ]:
        np.testing.assert_array_equal(
            np.asanyarray(nb.load(a).dataobj), np.asanyarray(nb.load(b).dataobj)
        )
    assert open(merged.label_table).read() == open(out.label_table).read()
    assert [r.path for r in at.load_atlas(merged.sparse_file).records] == files


@pytest.fixture
def cube_of_label_4(make_nifti):
    """A label image with label 4 in a 2x2x2 cube at (1..2, 1..2, 1..2)."""
    data = np.zeros(SHAPE, np.uint8)
    data[1:3, 1:3, 1:3] = 4
    return str(make_nifti("w.nii", data))


def _counted_as(path, n):
    """An atlas of ``path`` (label 4 only) as if ``n`` such volumes had been counted: the
    inputs counted and label 4's counts set to ``n``, to reach the uint16 limit quickly."""
    acc = at.LabelAtlasAccumulator()
    acc.add_file(path)
    acc._counted = n
    acc.boxes[4][1][...] = np.where(acc.boxes[4][1] > 0, n, 0)
    return acc


def test_counts_widen_from_uint16_before_they_could_overflow(cube_of_label_4):
    acc = _counted_as(cube_of_label_4, 65535)  # a count could reach 65536 with one more
    assert acc.boxes[4][1].dtype == np.uint16
    acc.add_file(cube_of_label_4)
    assert acc.boxes[4][1].dtype == np.uint32
    assert int(acc.counts_of(4)[1, 1, 1]) == 65536
    # merging two partials whose counts could sum past 65535 widens too
    a, b = _counted_as(cube_of_label_4, 40_000), _counted_as(cube_of_label_4, 40_000)
    a.merge(b)
    assert int(a.counts_of(4)[1, 1, 1]) == 80_000


def test_a_label_reaching_outside_its_box_is_counted_once(make_nifti):
    # input 2 has label 3 inside the first's box and far outside it: the part inside is
    # taken back out and added again over the grown box, never twice
    a = np.zeros(SHAPE, np.uint8)
    a[0, 0, 0] = 3
    b = a.copy()
    b[6, 7, 8] = 3
    files = [str(make_nifti("a.nii", a)), str(make_nifti("b.nii", b)), str(make_nifti("c.nii", a))]
    acc = at.accumulate_labels(files, num_threads=1)
    counts = acc.counts_of(3)
    assert counts[0, 0, 0] == 3 and counts[6, 7, 8] == 1 and counts.sum() == 4


# -- BIDS mode and the report ------------------------------------------------------------
#: SpatialReference of maps in MNI152NLin2009cAsym at res-2: the TemplateFlow URL.
TEMPLATE_RES_02 = (
    "https://templateflow.s3.amazonaws.com/tpl-MNI152NLin2009cAsym/"
    "tpl-MNI152NLin2009cAsym_res-02_T1w.nii.gz"
)


@pytest.fixture
def dseg_dataset(tmp_path, rng):
    """A derivatives dataset of three subjects' tissue segmentations (dseg, 3 classes)."""
    from .test_bids import SPACE, _save

    root = tmp_path / "derivatives" / "smriprep"
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(
        json.dumps(
            {
                "Name": "sMRIPrep",
                "BIDSVersion": "1.10.0",
                "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "sMRIPrep", "Version": "0.16.0"}],
            }
        )
    )
    for sub in ("01", "02", "03"):
        seg = rng.integers(0, 4, SHAPE).astype(np.uint8)
        _save(root / f"sub-{sub}" / "anat" / f"sub-{sub}_space-{SPACE}_res-2_dseg.nii.gz", seg)
    return root


def test_bids_atlas_is_a_validator_clean_derivative(dseg_dataset, tmp_path, capsys):
    from nipype_heatmap.cli.bids import main as bids_main

    from .bids_trees import validator_errors
    from .test_bids import SPACE

    pytest.importorskip("bids", reason="BIDS selection needs the 'bids' extra (pybids)")
    table = tmp_path / "tissues.tsv"
    table.write_text("index\tname\tcolor\n1\tCSF\t#0000ff\n2\tGM\t#808080\n3\tWM\t#ffffff\n")
    out = tmp_path / "derivatives" / "atlas"
    argv = [str(dseg_dataset), str(out), "group", "--atlas", "Tissue", "--space", SPACE, "-q"]
    assert bids_main([*argv, "--label-table", str(table), "--sparse"]) == 0
    stem = f"space-{SPACE}_atlas-Tissue_res-2"
    names = sorted(p.name for p in out.iterdir())
    for suffix in ("probseg.nii.gz", "probseg.json", "desc-th25_dseg.nii.gz", "dseg.tsv",
                   "desc-th0_dseg.json", "desc-sparse_probseg.nii.gz"):  # fmt: skip
        assert f"{stem}_{suffix}" in names
    side = json.loads((out / f"{stem}_desc-th50_dseg.json").read_text())
    assert side["Sources"][0].startswith("bids:") and side["SampleSize"] == 3
    # SpatialReference: the template's TemplateFlow URL at the inputs' res (issue 27)
    assert side["Threshold"] == 50.0 and side["SpatialReference"] == TEMPLATE_RES_02
    files = sorted(str(p) for p in dseg_dataset.rglob("*_dseg.nii.gz"))
    want = at.accumulate_labels(files).to_sparse()
    got = np.asanyarray(nb.load(out / f"{stem}_desc-th50_dseg.nii.gz").dataobj)
    np.testing.assert_array_equal(got, want.max_probability(50)[0])
    assert (out / f"{stem}_dseg.tsv").read_text().splitlines()[1].startswith("1\tCSF\t#0000ff\t3")
    assert validator_errors(out) == []
    # the same command again is fine; maps made with other parameters are not replaced
    assert bids_main([*argv, "--label-table", str(table), "--sparse"]) == 0
    before = (out / f"{stem}_desc-th50_dseg.nii.gz").read_bytes()
    capsys.readouterr()
    assert bids_main([*argv, "--background", "2"]) == 1
    assert "exists and was made from other inputs or parameters (Background" in (
        capsys.readouterr().err
    )
    assert (out / f"{stem}_desc-th50_dseg.nii.gz").read_bytes() == before


def test_atlas_derivative_functions_with_their_defaults(dseg_dataset, tmp_path, monkeypatch):
    # write_atlas_maps with every default: names, the dataset's files, the description; a
    # re-run with the same parameters replaces its maps, another background is refused
    # before any label image is read (it did check_atlas_derivative's job, which is gone).
    pytest.importorskip("bids", reason="BIDS selection needs the 'bids' extra (pybids)")
    from nipype_heatmap.bids import select_bids_inputs, write_atlas_maps
    from nipype_heatmap.bids.naming import atlas_stem

    from .test_bids import SPACE

    selection = select_bids_inputs(dseg_dataset, suffix="dseg")
    out = tmp_path / "deriv"
    stem = atlas_stem(selection.entities, "Tissue")
    assert stem == f"space-{SPACE}_atlas-Tissue_res-2"
    with pytest.raises(ValueError, match="'Tissue_2' is not a BIDS label"):
        write_atlas_maps(selection, out, atlas_name="Tissue_2", thresholds=[25])
    assert not out.exists()
    written = write_atlas_maps(selection, out, atlas_name="Tissue", thresholds=[25])
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if "sparse" in n]  # no sparse atlas unless asked for
    assert "README.md" in names and "dataset_description.json" in names
    about = out / "atlas-Tissue_description.json"
    assert written["description"] == str(about)
    assert json.loads(about.read_text()) == {
        "Name": "Tissue: probabilistic atlas of 3 label images",
        "Description": "Per-label probability maps (fraction of inputs with each label), "
        "maximum-probability maps at thresholds and a label table, made with "
        "nipype_heatmap from the images listed in each file's Sources.",
        "SpatialReference": TEMPLATE_RES_02,
    }
    # the same parameters are a re-run: its maps are replaced
    assert write_atlas_maps(selection, out, atlas_name="Tissue", thresholds=[25]) == written
    before = (out / f"{stem}_desc-th25_dseg.nii.gz").read_bytes()

    def refuse(*args, **kwargs):
        raise AssertionError("a label image was read before the outputs were checked")

    monkeypatch.setattr(at, "accumulate_labels", refuse)
    with pytest.raises(FileExistsError, match="Background"):
        write_atlas_maps(selection, out, atlas_name="Tissue", thresholds=[25], background=2)
    assert (out / f"{stem}_desc-th25_dseg.nii.gz").read_bytes() == before


@pytest.mark.slow  # a headless browser renders the page (about 9 s)
def test_atlas_report_shows_the_labels_in_their_colours(label_files, tmp_path, capsys):
    pytest.importorskip("nilearn", reason="the report needs the 'report' extra")
    files = label_files()
    out = tmp_path / "out"
    table = tmp_path / "t.tsv"
    table.write_text("index\tname\tcolor\n1\tred one\t#ff0000\n2\tgreen\t#00ff00\n")
    assert atlas_main([*files, "-o", str(out), "-q", "--report", "--label-table", str(table)]) == 0
    page = (out / "atlas-heatmap_desc-th25_dseg.html").read_text()
    assert "red one" in page and "#ff0000" in page and "Labels (6)" in page
    assert "Inputs (6)" in page and "at least\n25 %" in page.replace(" 25 %", "\n25 %")
    png = out / "figures" / "atlas-heatmap_desc-th25_dseg.png"
    import matplotlib.image

    pixels = (matplotlib.image.imread(png)[..., :3] * 255).astype(int)
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)
    green = (pixels[..., 1] > 200) & (pixels[..., 0] < 60) & (pixels[..., 2] < 60)
    assert red.sum() > 20 and green.sum() > 20  # label 1 and 2 drawn in the table's colours
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no headless Chromium here (Debian: apt-get install chromium)")
    shot = tmp_path / "page.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1200,1600", f"--screenshot={shot}",
         (out / "atlas-heatmap_desc-th25_dseg.html").as_uri()],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert shot.exists(), "the browser wrote no screenshot"
    seen = (matplotlib.image.imread(shot)[..., :3] * 255).astype(int)
    assert ((seen[..., 0] > 200) & (seen[..., 1] < 60) & (seen[..., 2] < 60)).sum() > 20
    capsys.readouterr()


def test_inputs_without_any_label_are_an_error_and_one_label_is_still_4d(make_nifti, tmp_path):
    empty = str(make_nifti("empty.nii.gz", np.zeros(SHAPE, np.uint8)))
    with pytest.raises(ValueError, match="no label in any of the 1 input.*background value 0"):
        at.build_atlas([empty], tmp_path / "none")
    assert not (tmp_path / "none").exists() or not any((tmp_path / "none").iterdir())
    one = str(make_nifti("one.nii.gz", np.ones(SHAPE, np.uint8)))
    written = at.build_atlas([one], tmp_path / "one")
    assert nb.load(written["probseg"]).shape == (*SHAPE, 1)
    assert nb.load(written["th50"]).shape == SHAPE


def test_a_chunk_without_labels_saves_loads_and_merges(make_nifti, tmp_path):
    empty = str(make_nifti("empty.nii.gz", np.zeros(SHAPE, np.uint8)))
    some = np.zeros(SHAPE, np.uint8)
    some[1, 2, 3] = 5
    labelled = str(make_nifti("some.nii.gz", some))
    part = at.save_atlas(at.accumulate_labels([empty]).to_sparse(), tmp_path / "p0.nii.gz")
    loaded = at.load_atlas(part)
    assert loaded.label_list == [] and loaded.n_inputs == 1
    other = at.save_atlas(at.accumulate_labels([labelled]).to_sparse(), tmp_path / "p1.nii.gz")
    merged = at.merge_atlases([part, other]).to_sparse()
    assert merged.n_inputs == 2 and merged.label_list == [5]
    assert merged.probability_of(5)[1, 2, 3] == np.float32(0.5)
    assert [r.path for r in merged.records] == [empty, labelled]


# -- gaps found by the mutation run (tools/mutate.py nipype_heatmap/atlas.py) ------------
def test_add_file_counts_records_and_uses_the_default_background(make_nifti):
    data = np.zeros(SHAPE, np.uint8)
    data[2, 2, 2] = 4
    a = str(make_nifti("a.nii.gz", data))
    b = str(make_nifti("b.nii.gz", np.zeros(SHAPE, np.uint8)))
    acc = at.LabelAtlasAccumulator()
    acc.add_file(a)
    acc.add_file(b)
    assert acc.n_inputs == 2 and [r.path for r in acc.records] == [a, b]
    assert all(r.digest.startswith("sha256:") for r in acc.records)
    sparse = acc.to_sparse()
    assert sparse.label_list == [4]  # 0 is the background by default
    assert sparse.probability_of(4)[2, 2, 2] == np.float32(0.5)
    assert sparse.ref_header is not None and sparse.presence == {4: 1}


def test_two_labels_at_a_voxel_are_ordered_by_probability(make_nifti):
    datas = [np.zeros(SHAPE, np.uint8) for _ in range(3)]
    datas[0][1, 1, 1] = 4  # label 4 once, label 9 twice: 9 comes first
    datas[1][1, 1, 1] = datas[2][1, 1, 1] = 9
    files = [str(make_nifti(f"k{i}.nii", d)) for i, d in enumerate(datas)]
    sparse = at.accumulate_labels(files).to_sparse()
    assert sparse.slots == 2
    row = int(np.searchsorted(sparse.index, 1 + SHAPE[0] * (1 + SHAPE[1] * 1)))
    assert sparse.labels[row].tolist() == [9, 4] and sparse.counts[row].tolist() == [2, 1]
    assert sparse.max_probability(0)[0][1, 1, 1] == 9


def test_adding_with_another_background_than_the_atlas_is_refused(make_nifti):
    path = str(make_nifti("a.nii", np.ones(SHAPE, np.uint8)))
    acc = at.accumulate_labels([path])
    with pytest.raises(ValueError, match="background 1 differs from 0"):
        acc.merge(at.accumulate_labels([path], background=1))
    assert acc.n_inputs == 1 and acc.label_list == [1]  # nothing was added


def test_query_at_the_grid_edges(make_nifti):
    data = np.zeros(SHAPE, np.uint8)
    data[0, 0, 0] = 2  # the first voxel
    data[0, 1, 0] = 3  # the voxel a query one step past the x edge would wrongly hit
    sparse = at.accumulate_labels([str(make_nifti("e.nii", data))]).to_sparse()
    affine = default_affine()
    assert sparse.query((affine @ [0, 0, 0, 1])[:3]) == [(2, 1.0)]
    assert sparse.query((affine @ [SHAPE[0], 0, 0, 1])[:3]) == []  # one voxel past x
    assert sparse.query((affine @ [-1, 0, 0, 1])[:3]) == []
    last = [n - 1 for n in SHAPE]  # after every listed voxel, and unlabelled
    assert sparse.query((affine @ [*last, 1])[:3]) == []


def test_sparse_file_has_the_atlas_grid_in_its_header_and_refuses_tampered_counts(
    label_files, tmp_path
):
    sparse = at.accumulate_labels(label_files()).to_sparse()
    path = at.save_atlas(sparse, tmp_path / "s.nii.gz")
    img = nb.load(path)
    np.testing.assert_allclose(img.affine, default_affine())
    assert int(img.header["sform_code"]) > 0 and int(img.header["qform_code"]) > 0
    tampered = _tampered(
        path, tmp_path / "t.nii.gz", lambda m: m.update(NInputs=2, Sources=m["Sources"][:2])
    )
    with pytest.raises(ValueError, match="t.nii.gz: counts above NInputs"):
        at.load_atlas(tampered)
    edited = _tampered(path, tmp_path / "e.nii.gz", lambda m: m.update(NInputs=7), checksum=False)
    with pytest.raises(
        ValueError, match=re.escape(str(edited)) + ": this sparse atlas was changed"
    ):
        at.load_atlas(edited)  # an edit that leaves the checksum as it was


def test_label_table_details(tmp_path):
    lut = tmp_path / "lut.txt"
    lut.write_text("7 Seven 1 2 3\n")  # no alpha column: still a LUT line
    assert at.read_label_table(lut) == {7: at.LabelInfo("Seven", "#010203")}
    bad = tmp_path / "bad.tsv"
    bad.write_text("index\tname\tcolor\n1\tx\t#12345\n")
    with pytest.raises(ValueError, match="bad.tsv, line 2: color '#12345' is not #rrggbb"):
        at.read_label_table(bad)
    colours = [at.default_color(label) for label in range(-5, 2000)]
    assert all(_is_hex_color(c) for c in colours)
    assert len(set(colours[:50])) == 50  # distinct for neighbouring labels


def test_write_defaults_names_and_header_fields(make_nifti, tmp_path):
    data = np.zeros(SHAPE, np.int16)
    data[1, 1, 1] = 3  # stored 3 with scl_slope 2: the label is 6
    path = str(
        make_nifti(
            "scaled.nii.gz",
            data,
            dtype=np.int16,
            slope=2.0,
            header_hook=lambda h: h.extensions.append(nb.nifti1.Nifti1Extension(6, b"input")),
        )
    )
    table = tmp_path / "t.tsv"
    table.write_text("index\tname\n6\tsix\n")
    written = at.build_atlas([path], tmp_path / "out", label_table=table, thresholds=[100])
    assert "sparse" not in written  # the dense 4D by default, not the sparse form
    assert os.path.basename(written["th100"]) == "atlas-heatmap_desc-th100_dseg.nii.gz"
    dseg = nb.load(written["th100"])
    assert dseg.header.get_slope_inter() == (None, None)  # the input's scaling is not copied
    assert np.asanyarray(dseg.dataobj)[1, 1, 1] == 6 and float(dseg.header["cal_max"]) == 6.0
    assert len(dseg.header.extensions) == 0  # nor its extensions
    assert "6\tsix" in open(written["table"]).read()


# Gaps found by the second mutation run of atlas.py.


def test_label_images_without_orientation_codes_give_maps_placed_by_their_affine(
    make_nifti, tmp_path
):
    # Neither qform nor sform in force (code 0): the maps get the grid's affine as an
    # aligned sform, or viewers would place them by voxel size alone (mutants: the test
    # inverted or or-ed, the sform not set, the atlas's affine unreachable).
    data = np.zeros(SHAPE, np.uint8)
    data[1:3, 1:3, 1:3] = 5
    files = []
    for i in range(2):
        path = make_nifti(f"l{i}.nii", data)
        raw = bytearray(path.read_bytes())  # nibabel sets a code on saving: clear them after
        hdr = nb.Nifti1Header(bytes(raw[:348]))
        hdr["qform_code"] = hdr["sform_code"] = 0
        raw[:348] = hdr.binaryblock
        path.write_bytes(bytes(raw))
        files.append(str(path))
    assert int(nb.load(files[0]).header["sform_code"]) == 0
    written = at.build_atlas(files, tmp_path / "out", thresholds=[0], sparse=True)
    for key in ("probseg", "th0", "sparse"):
        hdr = nb.load(written[key]).header
        assert int(hdr["sform_code"]) == 2, key
        np.testing.assert_allclose(hdr.get_sform(), nb.load(files[0]).header.get_best_affine())

    # An sform in force (MNI, code 4) without a qform keeps its code: nothing is replaced.
    def mni_sform_only(hdr):
        hdr.set_sform(default_affine(), code=4)
        hdr.set_qform(None, code=0)

    mni = [str(make_nifti(f"m{i}.nii", data, header_hook=mni_sform_only)) for i in range(2)]
    assert (
        int(nb.load(mni[0]).header["sform_code"]),
        int(nb.load(mni[0]).header["qform_code"]),
    ) == (4, 0)
    written = at.build_atlas(mni, tmp_path / "mni", thresholds=[0])
    assert int(nb.load(written["probseg"]).header["sform_code"]) == 4


def test_counting_more_into_an_atlas_continues_it(label_files):
    # A later count merged into an atlas made before continues it, with its background
    # (mutant: any atlas with inputs refused as having another background).
    files = label_files()
    both = at.accumulate_labels(files[:2])
    both.merge(at.accumulate_labels(files[2:]))
    once = at.accumulate_labels(files)
    assert both.n_inputs == once.n_inputs == len(files)
    assert both.label_list == once.label_list
    assert [r.path for r in both.records] == files
    for label in once.label_list:
        np.testing.assert_array_equal(both.counts_of(label), once.counts_of(label))
    with pytest.raises(ValueError, match="background 9 differs"):
        once.merge(at.accumulate_labels(files[:1], background=9))


def test_a_table_with_index_but_no_name_column_is_not_taken_for_bids(tmp_path):
    # Only a header with both "index" and "name" is a BIDS dseg.tsv (mutant: either one).
    table = tmp_path / "colors.tsv"
    table.write_text("index\tcolor\n4\t#ff0000\n")
    with pytest.raises(ValueError, match=r"colors.tsv, line 1: expected 'index name R G B"):
        at.read_label_table(table)


def test_scaled_labels_use_slope_and_intercept(make_nifti):
    # Labels stored as (label - 100) / 2 with scl_slope 2, scl_inter 100.
    stored = np.zeros(SHAPE, np.int16)
    stored[1, 1, 1] = 3  # label 106
    stored[2, 2, 2] = -50  # label 0: background
    path = str(make_nifti("s.nii.gz", stored, dtype=np.int16, slope=2.0, inter=100.0))
    acc = at.accumulate_labels([path])
    assert acc.label_list == [100, 106]  # every stored 0 is label 100
    assert int(acc.counts_of(106)[1, 1, 1]) == 1 and int(acc.counts_of(106)[0, 0, 0]) == 0


def test_whole_float_labels_beyond_32_bits_are_refused_naming_the_file(make_nifti):
    data = np.zeros(SHAPE, np.float64)
    data[1, 1, 1] = 2.0**31
    path = make_nifti("big.nii", data, dtype=np.float64)
    outside = ": labels from .* are outside the 32-bit integer range"
    with pytest.raises(ValueError, match=re.escape(str(path)) + outside):
        at.accumulate_labels([str(path)])
    data[1, 1, 1] = -(2.0**31) - 1
    path = make_nifti("small.nii", data, dtype=np.float64)
    with pytest.raises(ValueError, match=re.escape(str(path)) + outside):
        at.accumulate_labels([str(path)])
    data[1, 1, 1] = -(2.0**31)  # the smallest 32-bit integer is a label like any
    path = make_nifti("smallest.nii", data, dtype=np.float64)
    assert at.accumulate_labels([str(path)]).label_list == [-(2**31)]


def test_counts_widen_when_the_count_of_inputs_reaches_the_limit_step_by_step(
    cube_of_label_4,
):
    # The number of inputs counted is what decides the widening: it must grow by one per
    # input and by the other's inputs in a merge (mutants: it shrinks instead).
    acc = _counted_as(cube_of_label_4, 65534)
    acc.add_file(cube_of_label_4)  # 65535: still fits uint16
    acc.add_file(cube_of_label_4)  # 65536: must have widened
    assert int(acc.counts_of(4)[1, 1, 1]) == 65536
    parts = [_counted_as(cube_of_label_4, n) for n in (30_000, 30_000, 10_000)]
    parts[0].merge(parts[1])
    parts[0].merge(parts[2])
    assert int(parts[0].counts_of(4)[1, 1, 1]) == 70_000


def _tampered(path, out, change, *, checksum=True):
    """A copy of a sparse atlas file with its JSON metadata changed by ``change(meta)`` and,
    unless ``checksum=False``, a checksum that agrees: a file whose parts disagree although
    it is as its writer made it (what the checks behind the checksum are for)."""
    from nipype_heatmap.io import statefile

    img = nb.load(path)
    meta = json.loads(img.header.extensions[0].get_content())
    change(meta)
    if checksum:
        voxels = np.asanyarray(img.dataobj).reshape(-1, order="F")
        voxels = voxels.astype(voxels.dtype.newbyteorder("<"), copy=False)
        meta["Checksum"] = statefile.checksum(meta, [memoryview(voxels)])
    img.header.extensions.clear()
    img.header.extensions.append(nb.nifti1.Nifti1Extension(6, json.dumps(meta).encode()))
    nb.save(nb.Nifti1Image(np.asanyarray(img.dataobj), img.affine, img.header), out)
    return out


def test_sparse_files_whose_metadata_disagree_are_refused(label_files, tmp_path):
    # Another Format, or a sources list that disagrees with NInputs, is refused naming the
    # file (mutants: either check or-ed away).
    path = at.save_atlas(at.accumulate_labels(label_files()).to_sparse(), tmp_path / "s.nii.gz")
    other = _tampered(
        path, tmp_path / "f.nii.gz", lambda m: m.update(Format=m["Format"] + "-other")
    )
    with pytest.raises(ValueError, match="f.nii.gz: not a nipype_heatmap sparse atlas"):
        at.load_atlas(other)
    fewer = _tampered(path, tmp_path / "n.nii.gz", lambda m: m.update(Sources=m["Sources"][:-1]))
    with pytest.raises(ValueError, match="n.nii.gz: data .* or sources disagree"):
        at.load_atlas(fewer)
    short = _tampered(path, tmp_path / "p.nii.gz", lambda m: m.update(Presence=m["Presence"][:-1]))
    with pytest.raises(ValueError, match="p.nii.gz: corrupt sparse atlas"):
        at.load_atlas(short)


def test_sources_of_an_atlas_keep_their_content_hashes(label_files, tmp_path):
    from .conftest import file_digest

    files = label_files()
    saved = at.save_atlas(at.accumulate_labels(files).to_sparse(), tmp_path / "s.nii.gz")
    sparse = at.load_atlas(saved)
    assert [r.digest for r in sparse.records] == [f"sha256:{file_digest(Path(f))}" for f in files]


def test_max_probability_from_the_sparse_form_counts_no_tie_with_one_label(make_nifti, tmp_path):
    # One label per voxel at most (one slot): no tie (mutant: one reported). And a
    # probability exactly at the threshold is kept (>=), from the boxes and the sparse form.
    data = np.zeros(SHAPE, np.uint8)
    data[1:3, 1:3, 1:3] = 4
    files = [str(make_nifti("a.nii", data)), str(make_nifti("b.nii", np.zeros_like(data)))]
    acc = at.accumulate_labels(files)
    sparse = acc.to_sparse()
    assert sparse.slots == 1
    for form in (acc, sparse):
        dseg, tied = form.max_probability(50)  # probability exactly 0.5
        assert tied == 0
        assert int(dseg[1, 1, 1]) == 4 and int(dseg[0, 0, 0]) == 0
        dseg, _ = form.max_probability(50.01)
        assert not dseg.any()


def test_a_sparse_atlas_of_more_than_65535_inputs_converts_without_wrapping(make_nifti):
    # Counts past uint16 (a biobank's 80,000 label images) stay exact when the sparse form
    # becomes an accumulator again (to merge more into it). The counts are scaled here as
    # if that many inputs had been counted (mutants: the widening skipped).
    import dataclasses

    data = np.zeros(SHAPE, np.uint8)
    data[1:3, 1:3, 1:3] = 4
    files = [str(make_nifti(f"{n}.nii", data)) for n in "ab"]
    sparse = at.accumulate_labels(files).to_sparse()
    big = dataclasses.replace(
        sparse, n_inputs=80_000, counts=sparse.counts.astype(np.uint32) * 40_000
    )
    acc = big.to_accumulator()
    assert int(acc.counts_of(4)[1, 1, 1]) == 80_000


def test_a_query_lists_only_the_labels_present_at_the_voxel(make_nifti):
    # In an atlas with two slots, a voxel with one label answers with that label alone
    # (mutant: the empty second slot answered as a label with probability 0).
    a = np.zeros(SHAPE, np.uint8)
    b = np.zeros(SHAPE, np.uint8)
    a[1, 1, 1], b[1, 1, 1] = 4, 6  # two labels here: two slots
    a[3, 3, 3] = b[3, 3, 3] = 4  # one label here
    files = [str(make_nifti(f"{n}.nii", d)) for n, d in (("a", a), ("b", b))]
    sparse = at.accumulate_labels(files).to_sparse()
    assert sparse.slots == 2
    xyz = (default_affine() @ [3, 3, 3, 1])[:3]
    assert sparse.query(xyz) == [(4, 1.0)]


def test_volumes_in_the_table_use_the_spatial_voxel_size_only(make_nifti, tmp_path):
    # A label image stored as (x, y, z, 1) with a repetition time in pixdim[4]: the voxel
    # volume is the product of the three spatial sizes (mutant: times the TR).
    data = np.zeros(SHAPE + (1,), np.uint8)
    data[1:3, 1:3, 1:3, 0] = 4  # 8 voxels of 2 x 2 x 2 mm = 64 mm^3

    def with_tr(hdr):
        hdr.set_zooms((2.0, 2.0, 2.0, 3.0))

    files = [str(make_nifti(f"{n}.nii", data, header_hook=with_tr)) for n in "ab"]
    assert nb.load(files[0]).header.get_zooms() == (2.0, 2.0, 2.0, 3.0)
    written = at.build_atlas(files, tmp_path / "out", thresholds=[0])
    rows = open(written["table"]).read().splitlines()
    header = rows[0].split("\t")
    row = dict(zip(header, rows[1].split("\t"), strict=True))
    assert (row["index"], float(row["mean_volume_mm3"])) == ("4", 64.0)


def test_boxes_that_grow_away_from_the_grid_origin_count_exactly(make_nifti, rng):
    # On a grid larger than the boxes' margin, a label seen first in one corner and then in
    # another grows its box from a non-zero origin (mutant: the grown size miscomputed).
    big = (30, 28, 26)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    stack = []
    for x, y, z in [(10, 10, 10), (20, 22, 18), (12, 5, 20)]:
        data = np.zeros(big, np.uint8)
        data[x : x + 2, y : y + 2, z : z + 2] = 9
        stack.append(data)
    files = [str(make_nifti(f"g{i}.nii", d, affine=affine)) for i, d in enumerate(stack)]
    acc = at.accumulate_labels(files)
    expected = sum((d == 9).astype(np.int64) for d in stack)
    np.testing.assert_array_equal(acc.counts_of(9), expected)


def test_a_sparse_file_with_a_label_missing_from_its_metadata_is_refused(label_files, tmp_path):
    # Label 300 is in one input only (a count of 1 everywhere): dropping it from the
    # metadata must still be noticed (mutant: only counts above 1 checked).
    path = at.save_atlas(at.accumulate_labels(label_files()).to_sparse(), tmp_path / "s.nii.gz")

    def drop_300(meta):
        keep = [i for i, v in enumerate(meta["Labels"]) if int(v) != 300]
        assert len(keep) == len(meta["Labels"]) - 1
        meta["Labels"] = [meta["Labels"][i] for i in keep]
        meta["Presence"] = [meta["Presence"][i] for i in keep]

    tampered = _tampered(path, tmp_path / "d.nii.gz", drop_300)
    with pytest.raises(ValueError, match="d.nii.gz: counts above NInputs or labels missing"):
        at.load_atlas(tampered)


def test_a_colour_with_a_bad_first_digit_is_refused(tmp_path):
    table = tmp_path / "t.tsv"
    table.write_text("index\tname\tcolor\n4\tfour\t#g12345\n")
    with pytest.raises(ValueError, match="line 2: color '#g12345' is not #rrggbb"):
        at.read_label_table(table)


def test_a_background_outside_32_bits_is_refused():
    # Labels are 32-bit integers (larger ones are refused naming the file); so is the
    # background, before anything is read.
    for background in (2**31, -(2**31) - 1):
        with pytest.raises(ValueError, match=f"background {background} is outside the 32-bit"):
            at.LabelAtlasAccumulator(background)
    assert at.LabelAtlasAccumulator(-(2**31)).background == -(2**31)


# -- regressions: label range, atlas commits, queries -------------------------------------
@pytest.mark.parametrize(
    ("dtype", "value"),
    [(np.uint32, 2**31), (np.int64, 2**31), (np.int64, -(2**31) - 1), (np.uint64, 2**40)],
)
def test_integer_labels_beyond_32_bits_are_refused_and_no_atlas_file_is_left(
    make_nifti, tmp_path, capsys, dtype, value
):
    # Integer label images are taken as stored: a 4-byte or wider type can hold labels that
    # the atlas files (32-bit integers) cannot. The file is named; nothing is written.
    good = np.zeros(SHAPE, dtype)
    good[1, 1, 1] = 5
    big = good.copy()
    big[2, 3, 4] = value
    first = str(make_nifti("a.nii.gz", good))
    bad = make_nifti("b.nii.gz", big)
    assert np.asanyarray(nb.load(bad).dataobj).dtype == dtype  # stored as such, unscaled
    outside = re.escape(str(bad)) + ": labels from .* are outside the 32-bit integer range"
    with pytest.raises(ValueError, match=outside):
        at.accumulate_labels([first, str(bad)])
    out = tmp_path / "atlas"
    with pytest.raises(ValueError, match=outside):
        at.build_atlas([first, str(bad)], out, sparse=True)
    assert not out.exists() or list(out.iterdir()) == []
    assert atlas_main([first, str(bad), "-o", str(out), "--sparse", "--dense", "-q"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(bad) in err and "32-bit" in err
    assert not out.exists() or list(out.iterdir()) == []  # no probseg, json, tsv, dseg


def _atlas_set(folder):
    """Every file of an atlas folder -> the number of inputs it says it was made from."""
    found = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            found[path.name] = None  # a temporary file or a journal
        elif path.name.endswith(".nii.gz"):
            descrip = bytes(nb.load(path).header["descrip"].tobytes()).rstrip(b"\0").decode()
            found[path.name] = int(descrip.rsplit("N=", 1)[1])
        elif path.name.endswith(".json"):
            found[path.name] = json.loads(path.read_text())["SampleSize"]
        elif path.name.endswith(".tsv"):
            rows = path.read_text().splitlines()
            found[path.name] = max(int(r.split("\t")[3]) for r in rows[1:])  # n_inputs
        else:
            found[path.name] = None
    return found


@pytest.fixture
def atlas_of_three(make_nifti, tmp_path, rng):
    """Four label images (label 1 in every one); the atlas of the first three in out/."""
    files = []
    for i in range(4):
        data = rng.integers(0, 3, SHAPE).astype(np.uint8)
        data[0, 0, 0] = 1
        files.append(str(make_nifti(f"seg{i}.nii.gz", data)))
    out = tmp_path / "out"
    assert atlas_main([*files[:3], "-o", str(out), "--sparse", "--dense", "-q"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(_atlas_set(out).values()) == {3} and len(before) == 11
    return files, out, before


def test_a_failure_while_the_atlas_is_written_keeps_the_old_set_whole(
    atlas_of_three, monkeypatch, capsys
):
    # The disk fills while the fourth of eleven files is written: the run fails naming
    # that file, and every file of the earlier atlas is as it was (no probseg of N=4 beside
    # a table of N=3), with no temporary file left.
    files, out, before = atlas_of_three
    calls = fill_the_disk_at(monkeypatch, 4)
    assert atlas_main([*files, "-o", str(out), "--sparse", "--dense", "-q"]) == 1
    err = capsys.readouterr().err
    assert calls[3] in err and "No space left on device" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


_KILLED_BETWEEN_RENAMES = """
import os, sys
from nipype_heatmap.cli.atlas import main
from nipype_heatmap.io import writing

real = writing.Temporary.rename
done = []

def rename(self):
    if len(done) == 2:
        os._exit(9)  # killed: two files of the new atlas in place, nine not yet
    real(self)
    done.append(self.out_file)

writing.Temporary.rename = rename
main(sys.argv[1:])
"""


def test_a_kill_between_the_atlas_renames_is_completed_by_the_next_run(
    atlas_of_three, make_nifti, capsys
):
    # A run killed between the renames of its commit leaves a journal; the next run that
    # writes into the folder (even one that then fails) completes the renames, so the
    # folder holds the whole new atlas (N=4 in every file), never a mix of N=3 and N=4.
    files, out, before = atlas_of_three
    argv = [*files, "-o", str(out), "--sparse", "--dense", "-q"]
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_BETWEEN_RENAMES, *argv], capture_output=True, text=True
    )
    assert killed.returncode == 9, killed.stderr
    interrupted = _atlas_set(out)
    assert {3, 4} <= set(interrupted.values())  # mixed on disk until the next run
    assert any(name.startswith(".nipype_heatmap-commit-") for name in interrupted)
    not_labels = str(make_nifti("prob.nii.gz", np.full(SHAPE, 0.5, np.float32), dtype=np.float32))
    assert atlas_main([not_labels, "-o", str(out), "--sparse", "--dense", "-q"]) == 1
    assert "prob.nii.gz: not a label image" in capsys.readouterr().err
    recovered = _atlas_set(out)
    assert sorted(recovered) == sorted(before) and set(recovered.values()) == {4}


def test_an_error_between_the_atlas_renames_never_leaves_a_mixed_set(
    atlas_of_three, monkeypatch, capsys
):
    from nipype_heatmap.io import writing

    files, out, _ = atlas_of_three
    real = writing.Temporary.rename
    done = []

    def rename(self):
        if len(done) == 2:
            raise OSError(5, "Input/output error")
        real(self)
        done.append(self.out_file)

    monkeypatch.setattr(writing.Temporary, "rename", rename)
    assert atlas_main([*files, "-o", str(out), "--sparse", "--dense", "-q"]) == 1
    capsys.readouterr()
    monkeypatch.setattr(writing.Temporary, "rename", real)
    from nipype_heatmap.io.plan import recover_interrupted_commits

    recover_interrupted_commits(out)  # what the next run does first
    assert len(set(_atlas_set(out).values())) == 1


def test_a_query_between_voxel_centres_takes_the_nearest_voxel(make_nifti):
    # 0.6 voxel past the centre of voxel 2 is nearer voxel 3's centre: voxel 3 answers
    # (mutant: the index floored, or truncated towards zero); 0.4 voxel past it, voxel 2.
    data = np.zeros(SHAPE, np.uint8)
    data[2, 3, 4], data[3, 3, 4], data[2, 4, 4], data[2, 3, 5] = 6, 7, 8, 9
    for affine in (default_affine(), np.diag([-2.0, 2.0, 2.0, 1.0])):  # x flipped too
        sparse = at.accumulate_labels([str(make_nifti("q.nii", data, affine=affine))]).to_sparse()

        def at_voxel(*ijk, affine=affine, sparse=sparse):
            return sparse.query((affine @ [*ijk, 1.0])[:3])

        assert at_voxel(2, 3, 4) == [(6, 1.0)]
        assert at_voxel(2.6, 3, 4) == [(7, 1.0)]
        assert at_voxel(2.4, 3, 4) == [(6, 1.0)]
        assert at_voxel(2, 3.6, 4) == [(8, 1.0)]
        assert at_voxel(2, 3, 4.6) == [(9, 1.0)]
        assert at_voxel(2.4, 2.6, 4.4) == [(6, 1.0)]


@pytest.mark.parametrize("module", ["nilearn", "matplotlib"])
def test_a_report_without_its_extra_is_refused_before_anything_is_written(
    label_files, tmp_path, capsys, monkeypatch, module
):
    # The report's packages are checked first: no atlas written behind a failed command.
    files = label_files()
    out = tmp_path / "out"
    as_if_not_installed(monkeypatch, module)
    assert atlas_main([*files, "-o", str(out), "--report", "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unexpected" not in err
    assert f"needs the Python package {module!r}: pip install 'nipype_heatmap[report]'" in err
    assert not out.exists()


def test_the_atlas_report_records_the_command_it_was_given(label_files, tmp_path, capsys):
    # main(argv) in-process records argv, not the process's own command line (mutant:
    # sys.argv, which is pytest's here), quoted as a shell needs it.
    import html
    import shlex

    pytest.importorskip("nilearn", reason="the report needs the 'report' extra")
    files = label_files()[:2]
    out = tmp_path / "out dir"
    argv = [*files, "-o", str(out), "--report", "-q"]
    assert atlas_main(argv) == 0
    (page,) = out.glob("*.html")
    command = shlex.join(["nipype-heatmap-atlas", *argv])
    assert f"Command: <code>{html.escape(command)}</code>" in page.read_text()
    capsys.readouterr()
