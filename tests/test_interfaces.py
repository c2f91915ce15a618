"""HeatmapVolume: standalone, as a cached Node, after a MapNode and after a JoinNode."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import nibabel as nb
import numpy as np
import pytest
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from numpy.testing import assert_allclose

import nipype_heatmap
from nipype_heatmap.interfaces import HeatmapVolume

from .conftest import SHAPE, reference_heatmap

PLUGINS = [
    pytest.param("Linear", {}, id="Linear"),
    pytest.param("MultiProc", {"n_procs": 2}, id="MultiProc"),
]


def test_run_standalone_on_folder(make_nifti, in_dir, tmp_path):
    files = [make_nifti(f"m{i}.nii.gz") for i in range(3)]
    (tmp_path / "work").mkdir()
    res = HeatmapVolume(nii_folder=str(in_dir), use_mean=False, clip_to_input_range=False).run(
        cwd=str(tmp_path / "work")
    )
    out = res.outputs
    assert out.out_file == str(tmp_path / "work" / "heatmap_volume.nii.gz")
    assert out.n_inputs == 3
    assert out.input_files == [str(f) for f in files]
    assert_allclose(nb.load(out.out_file).get_fdata(), reference_heatmap(files, False, False))


def test_run_standalone_on_file_list_keeps_given_order(make_nifti, tmp_path):
    files = [make_nifti("b.nii.gz"), make_nifti("a.nii.gz")]
    res = HeatmapVolume(
        in_files=[str(f) for f in files], normalize=True, output_filename="p.nii"
    ).run(cwd=str(tmp_path))
    assert res.outputs.input_files == [str(f) for f in files]
    assert res.outputs.out_file == str(tmp_path / "p.nii")
    assert_allclose(
        nb.load(res.outputs.out_file).get_fdata(),
        reference_heatmap(files, normalize=True),
        rtol=1e-6,
    )


def test_folder_and_file_list_are_mutually_exclusive(make_nifti, in_dir, tmp_path):
    f = make_nifti("a.nii.gz")
    with pytest.raises(OSError, match="mutually exclusive"):  # Nipype's own xor check
        HeatmapVolume(nii_folder=str(in_dir), in_files=[str(f)])


def test_one_of_folder_or_files_is_required(tmp_path):
    with pytest.raises(ValueError, match="nii_folder|in_files"):
        HeatmapVolume().run(cwd=str(tmp_path))


def test_bad_output_filename_is_refused(make_nifti, in_dir, tmp_path):
    make_nifti("a.nii.gz")
    with pytest.raises(ValueError, match="output_filename"):
        HeatmapVolume(nii_folder=str(in_dir), output_filename="../x.nii.gz").run(cwd=str(tmp_path))


def test_core_errors_propagate_with_the_file_name(make_nifti, in_dir, tmp_path):
    make_nifti("a.nii.gz")
    bad = make_nifti("b.nii.gz", np.zeros((3, 3, 3), np.uint8))
    with pytest.raises(ValueError, match=str(bad)):
        HeatmapVolume(nii_folder=str(in_dir)).run(cwd=str(tmp_path))


def test_import_path_is_stable_for_pickled_results():
    assert HeatmapVolume.__module__ == "nipype_heatmap.interfaces"
    assert nipype_heatmap.HeatmapVolume is HeatmapVolume


def test_importing_the_package_does_not_import_nipype():
    code = "import sys, nipype_heatmap; print('nipype' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cached_folder_node_recomputes_when_folder_changes(make_nifti, in_dir, tmp_path):
    make_nifti("a.nii.gz", np.ones(SHAPE, np.uint8))
    make_nifti("b.nii.gz", np.ones(SHAPE, np.uint8))
    node = pe.Node(
        HeatmapVolume(nii_folder=str(in_dir), use_mean=False, clip_to_input_range=False),
        name="heatmap",
        base_dir=str(tmp_path / "work"),
    )
    first = node.run()
    assert first.outputs.n_inputs == 2
    assert nb.load(first.outputs.out_file).get_fdata().max() == 2

    make_nifti("c.nii.gz", np.ones(SHAPE, np.uint8))  # a subject is added
    second = node.run()
    assert second.outputs.n_inputs == 3
    assert nb.load(second.outputs.out_file).get_fdata().max() == 3

    (in_dir / "a.nii.gz").unlink()  # and one withdrawn
    third = node.run()
    assert third.outputs.n_inputs == 2


def test_cached_file_list_node_reuses_its_result(make_nifti, tmp_path):
    files = [str(make_nifti(f"m{i}.nii.gz")) for i in range(2)]
    node = pe.Node(HeatmapVolume(in_files=files), name="heatmap", base_dir=str(tmp_path))
    out = node.run().outputs.out_file
    stamp = os.stat(out).st_mtime_ns
    assert node.run().outputs.out_file == out
    assert os.stat(out).st_mtime_ns == stamp  # served from the cache, not recomputed


def _threshold(in_file, cutoff):
    """Binarize a map at ``cutoff`` (a stand-in for a segmentation node)."""
    import os

    import nibabel as nb
    import numpy as np

    img = nb.load(in_file)
    mask = (img.get_fdata() > cutoff).astype(np.uint8)
    out_file = os.path.abspath(os.path.basename(in_file).replace(".nii", "_mask.nii"))
    nb.Nifti1Image(mask, img.affine, img.header).to_filename(out_file)
    return out_file


@pytest.fixture
def prob_maps(make_nifti, rng):
    return [
        str(make_nifti(f"sub-{i:02d}.nii.gz", rng.random(SHAPE).astype(np.float32)))
        for i in range(1, 5)
    ]


def _expected_overlap(prob_maps, cutoff=0.5):
    return sum((nb.load(f).get_fdata() > cutoff).astype(float) for f in prob_maps)


def _workflow(name, base_dir):
    wf = pe.Workflow(name=name, base_dir=str(base_dir))
    wf.config["execution"]["poll_sleep_duration"] = 0.1  # MultiProc polls every 2 s otherwise
    return wf


@pytest.mark.parametrize(("plugin", "plugin_args"), PLUGINS)
def test_after_a_mapnode(prob_maps, tmp_path, plugin, plugin_args):
    wf = _workflow("map_wf", tmp_path)
    seg = pe.MapNode(
        niu.Function(function=_threshold, input_names=["in_file", "cutoff"], output_names=["out"]),
        iterfield=["in_file"],
        name="segment",
    )
    seg.inputs.in_file = prob_maps
    seg.inputs.cutoff = 0.5
    heat = pe.Node(HeatmapVolume(use_mean=False, clip_to_input_range=False), name="heatmap")
    wf.connect(seg, "out", heat, "in_files")
    graph = wf.run(plugin=plugin, plugin_args=plugin_args)
    (node,) = [n for n in graph.nodes() if n.name == "heatmap"]
    result = node.result.outputs
    assert result.n_inputs == 4
    assert_allclose(nb.load(result.out_file).get_fdata(), _expected_overlap(prob_maps))


@pytest.mark.parametrize(("plugin", "plugin_args"), PLUGINS)
def test_after_iterables_and_a_joinnode(prob_maps, tmp_path, plugin, plugin_args):
    wf = _workflow("join_wf", tmp_path)
    subjects = pe.Node(niu.IdentityInterface(fields=["in_file"]), name="subjects")
    subjects.iterables = ("in_file", prob_maps)
    seg = pe.Node(
        niu.Function(function=_threshold, input_names=["in_file", "cutoff"], output_names=["out"]),
        name="segment",
    )
    seg.inputs.cutoff = 0.5
    heat = pe.JoinNode(
        HeatmapVolume(),
        joinsource="subjects",
        joinfield=["in_files"],
        name="heatmap",
    )
    wf.connect([(subjects, seg, [("in_file", "in_file")]), (seg, heat, [("out", "in_files")])])
    graph = wf.run(plugin=plugin, plugin_args=plugin_args)
    (node,) = [n for n in graph.nodes() if n.name == "heatmap"]
    result = node.result.outputs
    assert result.n_inputs == 4
    assert_allclose(
        nb.load(result.out_file).get_fdata(), _expected_overlap(prob_maps) / 4, rtol=1e-6
    )


# -- Nipype hygiene -----------------------------------------------------------------------
def test_relative_paths_resolve_where_the_user_is(make_nifti, in_dir, tmp_path, monkeypatch):
    files = [make_nifti(f"m{i}.nii.gz") for i in range(2)]
    monkeypatch.chdir(tmp_path)
    by_folder = HeatmapVolume(nii_folder="inputs")
    by_files = HeatmapVolume(in_files=[os.path.join("inputs", f.name) for f in files])
    assert by_folder.inputs.nii_folder == str(in_dir)
    assert by_files.inputs.in_files == [str(f) for f in files]
    work = tmp_path / "work"
    work.mkdir()
    for interface in (by_folder, by_files):
        res = interface.run(cwd=str(work))  # runs elsewhere, still finds its inputs
        assert res.outputs.n_inputs == 2


def test_relative_symlinked_input_keeps_its_own_name(make_nifti, tmp_path, monkeypatch):
    target = make_nifti("a.nii.gz")
    (tmp_path / "link.nii.gz").symlink_to(target)
    monkeypatch.chdir(tmp_path)
    hm = HeatmapVolume(in_files=["link.nii.gz"])
    assert hm.inputs.in_files == [str(tmp_path / "link.nii.gz")]


def test_debug_does_not_change_the_node_hash(make_nifti, in_dir):
    files = [str(make_nifti(f"m{i}.nii.gz")) for i in range(2)]
    plain = HeatmapVolume(in_files=files)
    debug = HeatmapVolume(in_files=files, debug=True)
    assert plain.inputs.get_hashval()[1] == debug.inputs.get_hashval()[1]
    other = HeatmapVolume(in_files=files, use_mean=False)
    assert plain.inputs.get_hashval()[1] != other.inputs.get_hashval()[1]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.mark.parametrize("debug", [False, True])
def test_node_log_shows_core_messages(make_nifti, tmp_path, debug):
    a = str(make_nifti("a.nii.gz"))
    b = str(make_nifti("b.nii.gz"))
    records = _Records()
    nipype_log = logging.getLogger("nipype.interface")
    nipype_log.addHandler(records)
    try:
        node = pe.Node(HeatmapVolume(in_files=[a, b, a], debug=debug), name="heatmap")
        node.base_dir = str(tmp_path / "work")
        node.run()
    finally:
        nipype_log.removeHandler(records)
    text = "\n".join(records.messages)
    assert f"{a} is listed more than once" in text  # a warning: always shown
    assert ("finite value range" in text) == debug  # per-file ranges: only with debug
    assert ("output mean range" in text) == debug
    assert logging.getLogger("nipype_heatmap").handlers == []  # nothing left attached


def test_memory_estimate_grows_with_threads():
    from nipype_heatmap.interfaces import MEM_GB, mem_gb

    assert mem_gb() == MEM_GB == mem_gb(0)  # no thread asked: one
    assert mem_gb(4) == pytest.approx(MEM_GB + 3 * 0.06)
    assert mem_gb(4) == round(mem_gb(4), 2)  # GB to two decimals, as Nipype shows it


def test_package_logs_reach_nipype_only_when_warnings_or_asked_for_in_debug():
    from nipype_heatmap.interfaces import core_logs_in_nipype

    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    keep, nipype_log = Keep(), logging.getLogger("nipype.interface")
    nipype_log.addHandler(keep)
    package_log = logging.getLogger("nipype_heatmap.api")
    try:
        with core_logs_in_nipype():
            package_log.info("per-file range")
            package_log.warning("duplicate input")
        with core_logs_in_nipype(debug=True):
            package_log.info("per-file range, debug")
        package_log.warning("outside the block")
    finally:
        nipype_log.removeHandler(keep)
    assert seen == ["duplicate input", "per-file range, debug"]


@pytest.mark.parametrize(
    ("interface", "trait"),
    [
        ("HeatmapVolume", "in_files"),
        ("HeatmapState", "in_files"),
        ("MergeHeatmaps", "in_files"),
        ("UpdateHeatmapState", "add_files"),
        ("UpdateHeatmapState", "remove_files"),
        ("LabelAtlas", "in_files"),
        ("LabelAtlas", "partial_atlases"),
        ("PartialLabelAtlas", "in_files"),
    ],
)
def test_a_missing_input_file_is_refused_where_it_is_set_naming_it(
    interface, trait, make_nifti, tmp_path
):
    # in the user's script, when the workflow is built, not deep in a node's crash file
    from traits.api import TraitError

    from nipype_heatmap import interfaces

    present = str(make_nifti("present.nii.gz"))
    inputs = getattr(interfaces, interface)().inputs
    with pytest.raises(TraitError, match=rf"'{trait}' trait.*missing\.nii\.gz"):  # the input set
        setattr(inputs, trait, [present, str(tmp_path / "missing.nii.gz")])


def test_nodes_draw_no_progress_bar_in_their_logs(make_nifti, tmp_path, capfd):
    from nipype_heatmap.interfaces import HeatmapState, UpdateHeatmapState

    files = [str(make_nifti(f"m{i}.nii.gz")) for i in range(3)]
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    HeatmapVolume(in_files=files[:2]).run(cwd=str(tmp_path / "a"))
    state = HeatmapState(in_files=files[:2]).run(cwd=str(tmp_path / "b")).outputs.out_file
    UpdateHeatmapState(in_file=state, add_files=files[2:]).run(cwd=str(tmp_path / "c"))
    err = capfd.readouterr().err
    assert "it/s" not in err and "%|" not in err, err


def test_a_rerun_in_its_own_folder_does_not_read_its_earlier_output(make_nifti, in_dir):
    # nii_folder is the node's own working directory, which holds the previous run's
    # heatmap_volume.nii.gz: that file is this run's output, not a fourth input.
    files = [make_nifti(f"m{i}.nii.gz", np.ones(SHAPE, np.uint8)) for i in range(3)]
    node = HeatmapVolume(nii_folder=str(in_dir), use_mean=False, clip_to_input_range=False)
    first = node.run(cwd=str(in_dir)).outputs
    assert first.out_file == str(in_dir / "heatmap_volume.nii.gz")
    assert first.n_inputs == 3
    again = node.run(cwd=str(in_dir)).outputs
    assert again.n_inputs == 3 and again.input_files == [str(f) for f in files]
    assert nb.load(again.out_file).get_fdata().max() == 3  # not 3 + the earlier count


def _same_maps(got, expected):
    for trait in ("out_file", "coverage_file", "std_file", "variance_file", "overlap_file",
                  "mincount_file"):  # fmt: skip
        a = np.asanyarray(nb.load(getattr(got, trait)).dataobj)
        b = np.asanyarray(nb.load(getattr(expected, trait)).dataobj)
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True), trait
    with open(got.overlap_table) as a, open(expected.overlap_table) as b:
        assert a.read() == b.read()


def test_state_interfaces_give_the_single_node_maps(make_nifti, tmp_path):
    # HeatmapState chunks merged by MergeHeatmaps (api.merge_and_write), and a state
    # updated by UpdateHeatmapState (api.update_state), then written by MergeHeatmaps: the
    # maps of HeatmapVolume over the same list, bit for bit for masks, cohort maps included.
    from nipype_heatmap.interfaces import HeatmapState, MergeHeatmaps, UpdateHeatmapState

    files = [str(make_nifti(f"m{i}.nii.gz")) for i in range(5)]
    cohort = {"coverage": True, "std": True, "min_count": 2}

    def run(interface, folder):
        (tmp_path / folder).mkdir()
        return interface.run(cwd=str(tmp_path / folder)).outputs

    chunks = [
        run(HeatmapState(in_files=chunk), f"chunk{n}")
        for n, chunk in enumerate((files[:2], files[2:4]))
    ]
    assert [c.n_inputs for c in chunks] == [2, 2]
    assert chunks[0].out_file == str(tmp_path / "chunk0" / "heatmap_state.nii.gz")
    merged = run(MergeHeatmaps(in_files=[c.out_file for c in chunks], **cohort), "merged")
    assert merged.n_inputs == 4 and merged.input_files == files[:4]
    _same_maps(merged, run(HeatmapVolume(in_files=files[:4], **cohort), "four"))

    state_before = open(chunks[0].out_file, "rb").read()
    updated = run(
        UpdateHeatmapState(
            in_file=chunks[0].out_file, add_files=files[2:], remove_files=files[1:2]
        ),
        "updated",
    )
    kept = [files[0], *files[2:]]
    assert updated.n_inputs == 4 and updated.input_files == kept
    assert updated.out_file == str(tmp_path / "updated" / "heatmap_state.nii.gz")
    assert open(chunks[0].out_file, "rb").read() == state_before  # the input state is kept
    final = run(MergeHeatmaps(in_files=[updated.out_file], **cohort), "final")
    _same_maps(final, run(HeatmapVolume(in_files=kept, **cohort), "kept"))
