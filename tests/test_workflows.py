"""Sample workflows: wiring for every segmenter, docstrings that match, real small runs."""

from __future__ import annotations

import itertools
import re

import nibabel as nb
import numpy as np
import pytest
from nipype.pipeline import engine as pe
from nipype.pipeline.engine.utils import generate_expanded_graph
from numpy.testing import assert_allclose, assert_array_equal

from nipype_heatmap.interfaces import (
    HeatmapOfSubjects,
    HeatmapState,
    HeatmapVolume,
    MergeHeatmaps,
    mem_gb,
)
from nipype_heatmap.options import CohortOptions, MapOptions
from nipype_heatmap.workflows import (
    SEGMENTERS,
    init_bids_heatmap_wf,
    init_lesion_overlap_wf,
    init_scaled_atlas_wf,
    init_scaled_heatmap_wf,
    init_tissue_probability_wf,
)
from nipype_heatmap.workflows.tissue_probability import _split_tissues

from .conftest import default_affine

BUILDERS = {
    "tissue": lambda: init_tissue_probability_wf(segmenter="otsu"),
    "lesion": init_lesion_overlap_wf,
}
PLUGINS = [
    pytest.param("Linear", {}, id="Linear"),
    pytest.param("MultiProc", {"n_procs": 2}, id="MultiProc"),
]


def _docstring_fields(builder, section):
    doc = builder.__doc__
    block = re.search(rf"\n\s*{section}\n\s*-+\n(.*?)(\n\s*\n\s*[A-Z]\w+\n\s*-+\n|\Z)", doc, re.S)
    assert block, f"{builder.__name__} documents no {section}"
    return set(re.findall(r"^\s{4}(\w+)\s*$", block.group(1), re.M))


@pytest.mark.parametrize(
    ("builder", "kwargs"),
    [
        (init_tissue_probability_wf, {}),
        (init_lesion_overlap_wf, {}),
        (init_scaled_heatmap_wf, {"chunk_size": 10}),
        (init_scaled_atlas_wf, {"chunk_size": 10}),
        (init_bids_heatmap_wf, {"space": "MNI152NLin2009cAsym", "label": "lesion"}),
    ],
    ids=lambda b: getattr(b, "__name__", ""),
)
def test_docstring_inputs_and_outputs_match_the_nodes(builder, kwargs):
    wf = builder(**kwargs)
    inputs = set(wf.get_node("inputnode").inputs.copyable_trait_names())
    outputs = set(wf.get_node("outputnode").inputs.copyable_trait_names())
    assert _docstring_fields(builder, "Inputs") == inputs
    assert _docstring_fields(builder, "Outputs") == outputs


@pytest.mark.parametrize("segmenter", SEGMENTERS)
def test_tissue_workflow_wiring(segmenter):
    wf = init_tissue_probability_wf(segmenter=segmenter, name=f"tpm_{segmenter}_wf")
    assert wf.name == f"tpm_{segmenter}_wf"
    flat = wf._create_flat_graph()
    nodes = {n.name: n for n in flat.nodes()}
    segment = nodes[f"segment_{segmenter}"]
    assert isinstance(segment, pe.MapNode)
    split = nodes["split_tissues"]
    feeds = {(u.name, v.name): d["connect"] for u, v, d in flat.edges(data=True)}
    assert feeds[(segment.name, "split_tissues")] == [
        (
            {"otsu": "tissue_files", "fast": "partial_volume_files", "atropos": "posteriors"}[
                segmenter
            ],
            "tissue_lists",
        )
    ]
    for tissue in ("csf", "gm", "wm"):
        heat = nodes[f"{tissue}_heatmap"]
        assert isinstance(heat.interface, HeatmapVolume)
        assert heat.interface.inputs.use_mean is True
        assert feeds[(split.name, heat.name)] == [(tissue, "in_files")]
        assert ("out_file", f"{tissue}_probability") in feeds[(heat.name, "outputnode")]
    if segmenter == "fast":
        assert segment.interface.inputs.number_classes == 3
        assert feeds[("skull_strip", segment.name)] == [("out", "in_files")]
    if segmenter == "atropos":
        assert segment.interface.inputs.number_of_tissue_classes == 3
        assert segment.interface.inputs.save_posteriors is True
        assert ("brain_mask", "mask_image") in feeds[("inputnode", segment.name)]
    # The graph expands (iterables, MapNodes) without needing FSL or ANTs installed.
    expanded = generate_expanded_graph(flat)
    assert {n.name for n in expanded.nodes()} >= {"split_tissues", "gm_heatmap"}


def test_unknown_segmenter_is_refused():
    with pytest.raises(ValueError, match="spm"):
        init_tissue_probability_wf(segmenter="spm")


def test_split_tissues_flattens_per_class():
    nested = [["c1", "g1", "w1"], ["c2", "g2", "w2"]]
    assert _split_tissues(nested) == (["c1", "c2"], ["g1", "g2"], ["w1", "w2"])
    with pytest.raises(ValueError, match="one \\[CSF, GM, WM\\] list per subject"):
        _split_tissues([["c1", "g1"]])


@pytest.fixture
def phantoms(tmp_path, rng):
    """Three T1w-like phantoms: bright core (WM), mid shell (GM), dark outer shell (CSF)."""
    shape = (20, 22, 24)
    center = np.array(shape) / 2 - 0.5
    grid = np.indices(shape).astype(float)
    truth = []
    files = []
    for index, shift in enumerate((0.0, 1.0, -1.0)):
        radius = np.sqrt(sum((grid[a] - center[a] - shift * (a == 0)) ** 2 for a in range(3)))
        labels = np.full(shape, -1)
        labels[radius < 9] = 0
        labels[radius < 7] = 1
        labels[radius < 4] = 2
        t1 = np.choose(labels + 1, [0.0, 30.0, 60.0, 100.0]) + rng.normal(0, 2, shape)
        path = tmp_path / f"sub-{index:02d}_T1w.nii.gz"
        nb.Nifti1Image(t1.astype(np.float32), default_affine()).to_filename(path)
        files.append(str(path))
        truth.append(labels)
    truth = np.array(truth)
    inside = (truth >= 0).any(axis=0)  # the brain mask: the union of the phantoms
    truth[(truth < 0) & inside] = 0  # background inside the mask is dark, as CSF
    mask = tmp_path / "brain_mask.nii.gz"
    nb.Nifti1Image(inside.astype(np.uint8), default_affine()).to_filename(mask)
    return files, str(mask), truth


@pytest.mark.parametrize(
    ("plugin", "plugin_args"),
    [PLUGINS[0], pytest.param(*PLUGINS[1].values, id="MultiProc", marks=pytest.mark.slow)],
)  # MultiProc's 14 s here are its worker processes starting up
def test_otsu_tissue_workflow_runs(phantoms, tmp_path, plugin, plugin_args):
    files, mask, truth = phantoms
    wf = init_tissue_probability_wf(segmenter="otsu")
    wf.base_dir = str(tmp_path / "work")
    wf.config["execution"]["poll_sleep_duration"] = 0.1
    wf.inputs.inputnode.t1w_files = files
    wf.inputs.inputnode.brain_mask = mask
    graph = wf.run(plugin=plugin, plugin_args=plugin_args)
    # Nipype runs no outputnode (identity nodes are pruned) and keeps only the outputs that
    # are connected downstream, which are exactly the workflow's outputs.
    results = {n.name: n.result.outputs for n in graph.nodes()}
    assert results["gm_heatmap"].n_inputs == 3
    for index, tissue in enumerate(("csf", "gm", "wm")):
        expected = (truth == index).mean(axis=0)
        got = nb.load(results[f"{tissue}_heatmap"].out_file).get_fdata()
        # Smoothing before Otsu moves a few boundary voxels; the bulk must agree.
        inside = (truth >= 0).any(axis=0)
        agreement = np.mean(np.abs(got - expected)[inside] < 1e-6)
        assert agreement > 0.98, f"{tissue}: {agreement:.2f} of brain voxels agree"
        assert_allclose(got.sum(), expected.sum(), rtol=0.02)


@pytest.mark.parametrize(("plugin", "plugin_args"), PLUGINS)
def test_lesion_overlap_workflow_runs(make_nifti, tmp_path, plugin, plugin_args):
    masks = [str(make_nifti(f"sub-{i:02d}_mask.nii.gz")) for i in range(5)]
    wf = init_lesion_overlap_wf(name="overlap_wf")
    wf.base_dir = str(tmp_path / "work")
    wf.config["execution"]["poll_sleep_duration"] = 0.1
    wf.inputs.inputnode.lesion_masks = masks
    graph = wf.run(plugin=plugin, plugin_args=plugin_args)
    results = {n.name: n.result.outputs for n in graph.nodes()}
    stack = np.array([nb.load(m).get_fdata() for m in masks])
    count = nb.load(results["overlap_count"].out_file).get_fdata()
    prob = nb.load(results["lesion_probability"].out_file).get_fdata()
    assert_array_equal(count, stack.sum(axis=0))
    assert count.max() == stack.sum(axis=0).max() > 1  # not clipped to the 0..1 input range
    assert_allclose(prob, stack.mean(axis=0), rtol=1e-6)
    assert results["overlap_count"].n_inputs == 5


@pytest.mark.slow
def test_sample_script_runs_on_a_folder_of_masks(make_nifti, in_dir, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    for i in range(3):
        make_nifti(f"sub-{i:02d}_mask.nii.gz")
    script = Path(__file__).resolve().parent.parent / "workflows" / "run_lesion_overlap.py"
    done = subprocess.run(
        [sys.executable, str(script), str(in_dir), str(tmp_path / "work")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "overlap_count" in done.stdout and "lesion_count.nii.gz" in done.stdout


# -- every option combination builds, wired as asked ---------------------------------------
FLAG_SETS = [
    {"use_mean": m, "clip_to_input_range": c, "normalize": n}
    for m, c, n in itertools.product([True, False], repeat=3)
]
COHORTS = [
    None,
    {"coverage": True},
    {"std": True, "ddof": 0},
    {"min_count": 2},
    {"min_fraction": 0.5},
    {"coverage": True, "std": True, "min_count": 3},
]
COHORT_FILES = {  # what each cohort option adds to the outputs
    "coverage": {"coverage_file"},
    "std": {"std_file", "variance_file"},
    "min_count": {"overlap_file", "mincount_file", "overlap_table"},
    "min_fraction": {"overlap_file", "mincount_file", "overlap_table"},
}


def _feeds(wf):
    """(source node, destination node) -> [(output, input), ...] of the flat graph."""
    flat = wf._create_flat_graph()
    return {(u.name, v.name): d["connect"] for u, v, d in flat.edges(data=True)}


def _wanted(cohort):
    return set().union(*(COHORT_FILES[k] for k, v in (cohort or {}).items() if k in COHORT_FILES))


@pytest.mark.parametrize("flags", FLAG_SETS, ids=lambda f: "-".join(k for k, v in f.items() if v))
@pytest.mark.parametrize("cohort", COHORTS, ids=str)
@pytest.mark.parametrize("num_threads", [1, 3])
def test_scaled_heatmap_workflow_builds_for_every_option(flags, cohort, num_threads):
    wf = init_scaled_heatmap_wf(chunk_size=4, cohort=cohort, num_threads=num_threads, **flags)
    chunk_state = wf.get_node("chunk_state")
    merge = wf.get_node("merge_heatmaps")
    assert isinstance(chunk_state, pe.MapNode) and chunk_state.iterfield == ["in_files"]
    assert isinstance(chunk_state.interface, HeatmapState)
    assert chunk_state.interface.inputs.num_threads == num_threads
    assert chunk_state.mem_gb == mem_gb(num_threads)
    cohort = cohort or {}
    tracked = bool(cohort.get("std") or cohort.get("min_count") or cohort.get("min_fraction"))
    assert chunk_state.interface.inputs.cohort_stats is tracked
    assert isinstance(merge.interface, MergeHeatmaps)
    for name, value in {**flags, **cohort}.items():
        assert getattr(merge.interface.inputs, name) == value, name
    feeds = _feeds(wf)
    assert feeds[("split_chunks", "chunk_state")] == [("chunks", "in_files")]
    assert feeds[("chunk_state", "merge_heatmaps")] == [("out_file", "in_files")]
    outputs = {out for out, _ in feeds[("merge_heatmaps", "outputnode")]}
    assert outputs == {"out_file", "n_inputs", "input_files"} | _wanted(cohort)


@pytest.mark.parametrize(("dense", "sparse"), list(itertools.product([True, False], repeat=2)))
@pytest.mark.parametrize("thresholds", [(0, 25, 50), (12.5,)])
def test_scaled_atlas_workflow_builds_for_every_option(dense, sparse, thresholds):
    wf = init_scaled_atlas_wf(
        chunk_size=3, dense=dense, sparse=sparse, thresholds=thresholds, background=9
    )
    partial, merge = wf.get_node("partial_atlas"), wf.get_node("label_atlas")
    assert isinstance(partial, pe.MapNode) and partial.interface.inputs.background == 9
    assert merge.interface.inputs.dense is dense and merge.interface.inputs.sparse is sparse
    assert merge.interface.inputs.thresholds == [float(t) for t in thresholds]
    feeds = _feeds(wf)
    assert feeds[("partial_atlas", "label_atlas")] == [("out_file", "partial_atlases")]
    outputs = {out for out, _ in feeds[("label_atlas", "outputnode")]}
    always = {"dseg_files", "label_table", "n_inputs", "labels"}
    optional = {"probseg_file": dense, "sparse_file": sparse}
    assert outputs == always | {name for name, asked in optional.items() if asked}


@pytest.mark.parametrize("flags", FLAG_SETS, ids=lambda f: "-".join(k for k, v in f.items() if v))
@pytest.mark.parametrize("cohort", COHORTS, ids=str)
@pytest.mark.parametrize("report", [False, True], ids=["no-report", "report"])
@pytest.mark.parametrize("weighting", ["each-file", "average"])
def test_bids_heatmap_workflow_builds_for_every_option(flags, cohort, report, weighting):
    # The builder takes the options as objects (options=MapOptions, cohort=CohortOptions);
    # several_per_subject names the weighting ("each-file": each file once, what True was;
    # "average": each subject once, by HeatmapOfSubjects).
    wf = init_bids_heatmap_wf(
        space="MNI152NLin2009cAsym",
        label="lesion",
        desc="brain",
        participant_label=["01", "02"],
        bids_filters={"res": "2", "run": "1"},
        several_per_subject=weighting,
        overwrite=True,
        generate_report=report,
        options=MapOptions(**flags),
        cohort=CohortOptions(**(cohort or {})),
    )
    select = wf.get_node("select_inputs").interface.inputs
    # entity filters are lists now (several values: one map each)
    assert (select.space, select.label, select.desc) == (
        ["MNI152NLin2009cAsym"],
        ["lesion"],
        ["brain"],
    )
    assert select.participant_label == ["01", "02"]
    assert select.bids_filters == {"res": "2", "run": "1"}
    assert select.several_per_subject == weighting
    node = wf.get_node("heatmap")
    assert (
        type(node.interface)
        is {"each-file": HeatmapVolume, "average": HeatmapOfSubjects}[weighting]
    )
    heatmap = node.interface.inputs
    sink = wf.get_node("ds_heatmap").interface.inputs
    for name, value in flags.items():
        assert getattr(heatmap, name) == value == getattr(sink, name), name
    for name, value in (cohort or {}).items():
        assert getattr(heatmap, name) == value, name
    assert sink.generate_report is report and sink.overwrite is True
    feeds = _feeds(wf)
    stored = {out for out, _ in feeds.get(("heatmap", "ds_heatmap"), [])}
    assert stored == {"out_file"} | _wanted(cohort)
    selected = {("in_files", "in_files")} | (
        {("selections", "selection")} if weighting == "average" else set()
    )
    assert set(feeds[("select_inputs", "heatmap")]) == selected
    # the sink's outputs are per map (out_cohort: a dict per map, empty when no cohort map
    # is asked for), so each is wired whatever the options
    assert set(feeds[("ds_heatmap", "outputnode")]) == {
        (name, name)
        for name in ("out_files", "out_sidecars", "out_reports", "out_cohort", "written")
    }


@pytest.mark.parametrize("num_threads", [1, 4])
def test_lesion_and_tissue_workflows_reserve_their_threads(num_threads):
    for wf, names in (
        (init_lesion_overlap_wf(num_threads=num_threads), ("overlap_count", "lesion_probability")),
        (init_tissue_probability_wf(num_threads=num_threads), ("csf_heatmap", "gm_heatmap")),
    ):
        for name in names:
            node = wf.get_node(name)
            assert node.interface.inputs.num_threads == num_threads
            assert node.mem_gb == mem_gb(num_threads)


def test_scaled_heatmap_workflow_run_gives_the_single_node_maps(make_nifti, tmp_path):
    # One small real run with every cohort map: chunks of 2 of 5 masks, merged, against
    # one HeatmapVolume over the same list, bit for bit.
    files = [str(make_nifti(f"sub-{i:02d}_mask.nii.gz")) for i in range(5)]
    cohort = {"coverage": True, "std": True, "min_fraction": 0.4}
    wf = init_scaled_heatmap_wf(chunk_size=2, cohort=cohort, use_mean=False)
    wf.base_dir = str(tmp_path / "work")
    wf.inputs.inputnode.in_files = files
    graph = wf.run()
    merged = next(n for n in graph.nodes() if n.name == "merge_heatmaps").result.outputs
    (tmp_path / "one").mkdir()
    single = HeatmapVolume(in_files=files, use_mean=False, **cohort).run(cwd=str(tmp_path / "one"))
    assert merged.n_inputs == 5 and merged.input_files == files
    for name in ("out_file", "coverage_file", "std_file", "variance_file", "mincount_file"):
        got = np.asanyarray(nb.load(getattr(merged, name)).dataobj)
        want = np.asanyarray(nb.load(getattr(single.outputs, name)).dataobj)
        assert got.dtype == want.dtype and np.array_equal(got, want, equal_nan=True), name
    assert merged.mincount_file.endswith("heatmap_volume_mincount2.nii.gz")  # ceil(0.4 * 5)
    states = sorted((tmp_path / "work").rglob("heatmap_state.nii.gz"))
    assert len(states) == 3 and all("chunk_state" in str(p) for p in states)
