# ruff: noqa: E501  (trait descriptions are quoted whole)
"""Spec tests for every interface, as nipype's generated ``test_auto_*`` files do.

Each trait's metadata is written out here; a change to a mandatory flag, an xor, a default
or a description must be made on purpose, in both places.
"""

from __future__ import annotations

import pytest

from nipype_heatmap import interfaces

KEYS = ("mandatory", "xor", "usedefault", "nohash", "deprecated", "new_name", "desc")

INPUTS = {
    "HeatmapVolume": {
        "clip_to_input_range": {
            "usedefault": True,
            "desc": "Clip the map to the range of all finite input values.",
            "default": True,
        },
        "coverage": {
            "usedefault": True,
            "desc": "Also write the coverage map (inputs with a finite value).",
            "default": False,
        },
        "ddof": {
            "usedefault": True,
            "desc": "Delta degrees of freedom of std/variance.",
            "default": 1,
        },
        "debug": {
            "usedefault": True,
            "nohash": True,
            "desc": "Log per-file value ranges and final statistics (does not change the map).",
            "default": False,
        },
        "in_files": {
            "mandatory": True,
            "xor": ["nii_folder"],
            "desc": "3D NIfTI files on one grid, in the order to use; the first sets the header.",
        },
        "min_count": {
            "xor": ["min_fraction"],
            "desc": "Write the mask of voxels non-zero in at least this many inputs.",
        },
        "min_fraction": {
            "xor": ["min_count"],
            "desc": "As min_count, with a fraction of the inputs (ceil(F * N)).",
        },
        "nii_folder": {
            "mandatory": True,
            "xor": ["in_files"],
            "desc": "Folder whose .nii/.nii.gz files (sorted by name) are the inputs.",
            "exists": True,
        },
        "normalize": {
            "usedefault": True,
            "desc": "Min-max scale the finite values of the map to [0, 1].",
            "default": False,
        },
        "num_threads": {
            "usedefault": True,
            "nohash": True,
            "desc": "Threads to use; Nipype's plugins reserve this many cores (not hashed).",
            "default": 1,
        },
        "output_filename": {
            "usedefault": True,
            "desc": "Bare file name of the heatmap, ending in .nii or .nii.gz.",
            "default": "heatmap_volume.nii.gz",
        },
        "std": {
            "usedefault": True,
            "desc": "Also write the standard deviation and variance maps.",
            "default": False,
        },
        "use_mean": {
            "usedefault": True,
            "desc": "Voxel-wise mean (probability map); False gives the sum (count map).",
            "default": True,
        },
    },
    "HeatmapState": {
        "cohort_stats": {
            "usedefault": True,
            "desc": "Also track the non-zero count and the spread, so "
            "that every cohort map can be written from the merged "
            "or updated state (costs time for floating-point "
            "inputs).",
            "default": True,
        },
        "in_files": {
            "mandatory": True,
            "desc": "One chunk of the 3D NIfTI files, in order; the first "
            "sets the grid and header.",
        },
        "num_threads": {
            "usedefault": True,
            "nohash": True,
            "desc": "Threads to use; Nipype's plugins reserve this many cores (not hashed).",
            "default": 1,
        },
        "output_filename": {
            "usedefault": True,
            "desc": "Bare file name of the state (a .nii or .nii.gz file).",
            "default": "heatmap_state.nii.gz",
        },
    },
    "MergeHeatmaps": {
        "clip_to_input_range": {
            "usedefault": True,
            "desc": "Clip the map to the range of all finite input values.",
            "default": True,
        },
        "coverage": {
            "usedefault": True,
            "desc": "Also write the coverage map (inputs with a finite value).",
            "default": False,
        },
        "ddof": {
            "usedefault": True,
            "desc": "Delta degrees of freedom of std/variance.",
            "default": 1,
        },
        "in_files": {
            "mandatory": True,
            "desc": "States (HeatmapState, UpdateHeatmapState), in input order.",
        },
        "min_count": {
            "xor": ["min_fraction"],
            "desc": "Write the mask of voxels non-zero in at least this many inputs.",
        },
        "min_fraction": {
            "xor": ["min_count"],
            "desc": "As min_count, with a fraction of the inputs (ceil(F * N)).",
        },
        "normalize": {
            "usedefault": True,
            "desc": "Min-max scale the finite values of the map to [0, 1].",
            "default": False,
        },
        "output_filename": {
            "usedefault": True,
            "desc": "Bare file name of the heatmap, ending in .nii or .nii.gz.",
            "default": "heatmap_volume.nii.gz",
        },
        "std": {
            "usedefault": True,
            "desc": "Also write the standard deviation and variance maps.",
            "default": False,
        },
        "use_mean": {
            "usedefault": True,
            "desc": "Voxel-wise mean (probability map); False gives the sum (count map).",
            "default": True,
        },
    },
    "UpdateHeatmapState": {
        "add_files": {"desc": "3D NIfTI files to add, in order (none already in it)."},
        "in_file": {
            "mandatory": True,
            "desc": "The state to update (not modified).",
            "exists": True,
        },
        "num_threads": {
            "usedefault": True,
            "nohash": True,
            "desc": "Threads to use; Nipype's plugins reserve this many cores (not hashed).",
            "default": 1,
        },
        "output_filename": {
            "usedefault": True,
            "desc": "Bare file name of the updated state (a .nii or .nii.gz file).",
            "default": "heatmap_state.nii.gz",
        },
        "remove_files": {
            "desc": "Inputs of the state to remove, unchanged since "
            "they were added (hash checked)."
        },
    },
    "SelectBIDSInputs": {
        "acquisition": {"desc": "acq entity the inputs must have."},
        "allow_native_space": {
            "usedefault": True,
            "desc": "Accept inputs in a space that is not a template.",
            "default": False,
        },
        "bids_database_dir": {
            "nohash": True,
            "desc": "Keep the pybids index here for later runs (created).",
        },
        "bids_dir": {
            "mandatory": True,
            "desc": "Root of a BIDS (derivatives) dataset.",
            "exists": True,
        },
        "bids_filter_file": {"desc": "A BIDS filter file (JSON), as fMRIPrep's.", "exists": True},
        "bids_filters": {"desc": "Entity filters, in any shape of a BIDS filter file."},
        "datatype": {"desc": "datatype the inputs must have (anat, func, dwi...)."},
        "desc": {"desc": "desc entity the inputs must have (e.g. brain)."},
        "label": {
            "desc": "label entity the inputs must have (e.g. lesion, GM); several: one map each."
        },
        "participant_label": {"desc": "Subjects to include (default: all found)."},
        "res": {"desc": "res entity the inputs must have (e.g. 2)."},
        "run": {"desc": "run entity the inputs must have."},
        "session": {"desc": "session the inputs must have (the map is then named ses-<label>)."},
        "several_per_subject": {
            "usedefault": True,
            "desc": "How to weigh subjects with several files: refused (None), average (each "
            "subject once, its files averaged first) or each-file.",
            "default": None,
        },
        "space": {
            "desc": "space entity the inputs must have (a template, e.g. MNI152NLin2009cAsym)."
        },
        "suffix": {"desc": "BIDS suffix of the inputs (mask, probseg, dseg...; default: mask)."},
        "task": {"desc": "task entity the inputs must have."},
    },
    "HeatmapOfSubjects": {
        "clip_to_input_range": {
            "usedefault": True,
            "desc": "Clip the map to the range of all finite input values.",
            "default": True,
        },
        "coverage": {
            "usedefault": True,
            "desc": "Also write the coverage map (inputs with a finite value).",
            "default": False,
        },
        "ddof": {
            "usedefault": True,
            "desc": "Delta degrees of freedom of std/variance.",
            "default": 1,
        },
        "in_files": {
            "mandatory": True,
            "desc": "The selection's files (hashed, so that a changed file re-runs the node).",
        },
        "min_count": {
            "xor": ["min_fraction"],
            "desc": "Write the mask of voxels non-zero in at least this many inputs.",
        },
        "min_fraction": {
            "xor": ["min_count"],
            "desc": "As min_count, with a fraction of the inputs (ceil(F * N)).",
        },
        "normalize": {
            "usedefault": True,
            "desc": "Min-max scale the finite values of the map to [0, 1].",
            "default": False,
        },
        "num_threads": {
            "usedefault": True,
            "nohash": True,
            "desc": "Reader threads.",
            "default": 1,
        },
        "output_filename": {
            "usedefault": True,
            "desc": "Bare file name of the heatmap, ending in .nii or .nii.gz.",
            "default": "heatmap_volume.nii.gz",
        },
        "selection": {
            "mandatory": True,
            "desc": "The selection (SelectBIDSInputs): which files are whose.",
        },
        "std": {
            "usedefault": True,
            "desc": "Also write the standard deviation and variance maps.",
            "default": False,
        },
        "use_mean": {
            "usedefault": True,
            "desc": "Voxel-wise mean (probability map); False gives the sum (count map).",
            "default": True,
        },
    },
    "HeatmapDerivativesSink": {
        "clip_to_input_range": {
            "usedefault": True,
            "desc": "Whether they were clipped.",
            "default": True,
        },
        "command": {"desc": "What made the maps (command line or workflow), for provenance."},
        "coverage_file": {"desc": "Coverage maps, one per map."},
        "ddof": {
            "usedefault": True,
            "desc": "Delta degrees of freedom of std/variance.",
            "default": 1,
        },
        "generate_report": {
            "usedefault": True,
            "desc": "Also write each map's figure and HTML report.",
            "default": False,
        },
        "in_files": {"mandatory": True, "desc": "The heatmaps to store, one per selection."},
        "min_count": {"xor": ["min_fraction"], "desc": "The k of the minimum-overlap mask."},
        "min_fraction": {"xor": ["min_count"], "desc": "The k as a fraction (ceil(F * N))."},
        "mincount_file": {"desc": "Minimum-overlap masks."},
        "normalize": {
            "usedefault": True,
            "desc": "Whether they were normalized.",
            "default": False,
        },
        "out_desc": {
            "desc": "desc entity of the map (one map only), replacing the automatic one."
        },
        "output_dir": {"mandatory": True, "desc": "Root of the derivatives dataset to write."},
        "overlap_file": {"desc": "Non-zero count maps."},
        "overlap_table": {"desc": "Minimum-overlap tables."},
        "overwrite": {
            "usedefault": True,
            "desc": "Replace maps of the same names made from other inputs or parameters.",
            "default": False,
        },
        "selections": {"mandatory": True, "desc": "Each map's selection (SelectBIDSInputs)."},
        "std_file": {"desc": "Standard deviation maps."},
        "underlay": {"desc": "Anatomical underlay for the reports.", "exists": True},
        "use_mean": {
            "usedefault": True,
            "desc": "Whether the maps are means (else sums).",
            "default": True,
        },
        "variance_file": {"desc": "Variance maps."},
    },
    "LabelAtlas": {
        "atlas_name": {
            "usedefault": True,
            "desc": "The atlas-<name> entity of the output names.",
            "default": "heatmap",
        },
        "background": {"usedefault": True, "desc": "The value that is no label.", "default": 0},
        "dense": {
            "usedefault": True,
            "desc": "Write the dense 4D probability image.",
            "default": True,
        },
        "in_files": {
            "xor": ["partial_atlases"],
            "desc": "Label images on one grid, in order; the first sets the grid and header.",
        },
        "label_table": {
            "desc": "Label names and colours: a BIDS dseg.tsv or a FreeSurfer LUT.",
            "exists": True,
        },
        "num_threads": {
            "usedefault": True,
            "nohash": True,
            "desc": "Threads to use; Nipype's plugins reserve this many cores (not hashed).",
            "default": 1,
        },
        "partial_atlases": {
            "xor": ["in_files"],
            "desc": "Sparse partial atlases (PartialLabelAtlas) to merge, in input order.",
        },
        "sparse": {"usedefault": True, "desc": "Write the sparse atlas.", "default": False},
        "thresholds": {
            "usedefault": True,
            "desc": "Percent thresholds of the maximum-probability maps.",
            "default": [0.0, 25.0, 50.0],
        },
    },
    "PartialLabelAtlas": {
        "background": {"usedefault": True, "desc": "The value that is no label.", "default": 0},
        "in_files": {"mandatory": True, "desc": "One chunk of the label images, in order."},
        "num_threads": {
            "usedefault": True,
            "nohash": True,
            "desc": "Threads to use; Nipype's plugins reserve this many cores (not hashed).",
            "default": 1,
        },
        "output_filename": {
            "usedefault": True,
            "desc": "Bare file name of the partial atlas (a .nii or .nii.gz file).",
            "default": "partial_atlas.nii.gz",
        },
    },
}

OUTPUTS = {
    "HeatmapVolume": {
        "coverage_file": {"desc": "Coverage map (uint16/uint32), when asked for."},
        "input_files": {"desc": "The files used, in order."},
        "mincount_file": {"desc": "Minimum-overlap mask (uint8), with min_count."},
        "n_inputs": {"desc": "How many volumes went into the heatmap."},
        "out_file": {"desc": "The float32 heatmap, in the node's working directory."},
        "overlap_file": {"desc": "Per-voxel count of non-zero inputs, with min_count."},
        "overlap_table": {"desc": "TSV of voxels surviving each k, with min_count."},
        "std_file": {"desc": "Standard deviation map (float32), when asked for."},
        "variance_file": {"desc": "Variance map (float32), when asked for."},
    },
    "HeatmapState": {
        "n_inputs": {"desc": "How many volumes the state holds."},
        "out_file": {"desc": "The state: sums and counts, metadata embedded."},
    },
    "MergeHeatmaps": {
        "coverage_file": {"desc": "Coverage map (uint16/uint32), when asked for."},
        "input_files": {"desc": "The files used, in order."},
        "mincount_file": {"desc": "Minimum-overlap mask (uint8), with min_count."},
        "n_inputs": {"desc": "How many volumes went into the heatmap."},
        "out_file": {"desc": "The float32 heatmap, in the node's working directory."},
        "overlap_file": {"desc": "Per-voxel count of non-zero inputs, with min_count."},
        "overlap_table": {"desc": "TSV of voxels surviving each k, with min_count."},
        "std_file": {"desc": "Standard deviation map (float32), when asked for."},
        "variance_file": {"desc": "Variance map (float32), when asked for."},
    },
    "UpdateHeatmapState": {
        "input_files": {"desc": "Its inputs, in order."},
        "n_inputs": {"desc": "How many volumes the updated state holds."},
        "out_file": {"desc": "The updated state, in the node's working directory."},
    },
    "SelectBIDSInputs": {
        "in_files": {"desc": "Each map's files, sorted by path."},
        "selections": {"desc": "Each map's selection as plain data (BIDSSelection.as_dict())."},
        "subjects": {"desc": "Each map's subjects."},
    },
    "HeatmapOfSubjects": {
        "coverage_file": {"desc": "Coverage map (uint16/uint32), when asked for."},
        "input_files": {"desc": "The files used, in order."},
        "mincount_file": {"desc": "Minimum-overlap mask (uint8), with min_count."},
        "n_inputs": {"desc": "How many volumes went into the heatmap."},
        "out_file": {"desc": "The float32 heatmap, in the node's working directory."},
        "overlap_file": {"desc": "Per-voxel count of non-zero inputs, with min_count."},
        "overlap_table": {"desc": "TSV of voxels surviving each k, with min_count."},
        "std_file": {"desc": "Standard deviation map (float32), when asked for."},
        "variance_file": {"desc": "Variance map (float32), when asked for."},
    },
    "HeatmapDerivativesSink": {
        "out_cohort": {"desc": "Per map, each stored cohort map -> its path."},
        "out_files": {"desc": "The maps, BIDS-named, in the dataset."},
        "out_reports": {"desc": "Their HTML reports, when asked for."},
        "out_sidecars": {"desc": "Their JSON sidecars."},
        "written": {"desc": "Per map, every file written (role -> path)."},
    },
    "LabelAtlas": {
        "dseg_files": {"desc": "Maximum-probability maps, one per threshold, in order."},
        "label_table": {"desc": "The label table (BIDS dseg.tsv)."},
        "labels": {"desc": "Every label, ascending (the 4D volumes' order)."},
        "n_inputs": {"desc": "How many label images went in."},
        "probseg_file": {"desc": "4D float32 per-label probability maps (with dense=True)."},
        "sparse_file": {"desc": "The sparse atlas (with sparse=True)."},
    },
    "PartialLabelAtlas": {
        "n_inputs": {"desc": "How many label images this chunk holds."},
        "out_file": {"desc": "The chunk's sparse atlas (exact counts)."},
    },
}


def _metadata(trait) -> dict:
    found = {key: getattr(trait, key) for key in KEYS if getattr(trait, key, None)}
    exists = getattr(trait.trait_type, "exists", None)
    if exists:
        found["exists"] = exists
    if trait.usedefault:
        found["default"] = trait.default
    return found


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_input_spec(name):
    spec = getattr(interfaces, name).input_spec()
    traits = {
        n: spec.trait(n) for n in spec.copyable_trait_names() if n not in ("args", "environ")
    }
    assert {n: _metadata(t) for n, t in traits.items()} == INPUTS[name]


@pytest.mark.parametrize("name", sorted(OUTPUTS))
def test_output_spec(name):
    spec = getattr(interfaces, name).output_spec()
    assert {n: {"desc": spec.trait(n).desc} for n in spec.copyable_trait_names()} == OUTPUTS[name]


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_every_path_input_is_made_absolute_where_it_is_set(name):
    spec = getattr(interfaces, name).input_spec()
    for trait_name in spec.copyable_trait_names():
        trait = spec.trait(trait_name)
        kinds = [trait.trait_type, *[t.trait_type for t in (trait.inner_traits or ())]]
        for kind in kinds:
            if type(kind).__name__ in ("File", "Directory"):
                pytest.fail(f"{name}.{trait_name} is a plain {type(kind).__name__}")


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_list_inputs_carry_their_metadata_on_the_outer_trait(name):
    # mandatory/xor/desc on the inner File would leave the list itself silently optional
    # (niworkflows' MergeSeries, nipype's NormalizeProbabilityMapSet)
    spec = getattr(interfaces, name).input_spec()
    for trait_name in spec.copyable_trait_names():
        for inner in spec.trait(trait_name).inner_traits or ():
            for key in ("mandatory", "xor", "desc", "usedefault", "nohash"):
                assert not getattr(inner, key, None), f"{name}.{trait_name}: inner {key}"


#: Inputs that never change a result: logging, threads, where pybids keeps its index (a
#: cache, rebuilt when the dataset changes).
NOT_HASHED = ("debug", "num_threads", "bids_database_dir")


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_inputs_that_do_not_change_the_result_are_not_hashed(name):
    spec = getattr(interfaces, name).input_spec()
    for trait_name in spec.copyable_trait_names():
        assert bool(spec.trait(trait_name).nohash) == (trait_name in NOT_HASHED), (
            f"{name}.{trait_name}"
        )


@pytest.mark.parametrize("name", ["HeatmapVolume", "MergeHeatmaps", "HeatmapOfSubjects"])
def test_map_interfaces_share_the_option_inputs_and_the_map_outputs(name):
    from nipype_heatmap.interfaces._base import (
        CohortInputSpec,
        MapOptionsInputSpec,
        MapsOutputSpec,
    )

    interface = getattr(interfaces, name)
    assert issubclass(interface.input_spec, MapOptionsInputSpec)
    assert issubclass(interface.input_spec, CohortInputSpec)
    assert interface.output_spec is MapsOutputSpec
