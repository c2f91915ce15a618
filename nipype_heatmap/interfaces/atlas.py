"""Probabilistic atlases from label images: ``LabelAtlas`` and ``PartialLabelAtlas``."""

from __future__ import annotations

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    OutputMultiObject,
    SimpleInterface,
    Str,
    TraitedSpec,
    isdefined,
    traits,
)

from .._docs import SHORT
from ._base import AbsFile, core_logs_in_nipype, output_in_cwd

__all__ = [
    "LabelAtlas",
    "PartialLabelAtlas",
]


class _AtlasOptionsInputSpec(BaseInterfaceInputSpec):
    atlas_name = Str(
        "heatmap", usedefault=True, desc="The atlas-<name> entity of the output names."
    )
    thresholds = traits.List(
        traits.Float,
        [0.0, 25.0, 50.0],
        usedefault=True,
        desc="Percent thresholds of the maximum-probability maps.",
    )
    label_table = AbsFile(
        exists=True, desc="Label names and colours: a BIDS dseg.tsv or a FreeSurfer LUT."
    )
    dense = traits.Bool(True, usedefault=True, desc="Write the dense 4D probability image.")
    sparse = traits.Bool(False, usedefault=True, desc="Write the sparse atlas.")


class _LabelAtlasInputSpec(_AtlasOptionsInputSpec):
    in_files = InputMultiObject(
        AbsFile(exists=True),
        xor=["partial_atlases"],
        desc="Label images on one grid, in order; the first sets the grid and header.",
    )
    partial_atlases = InputMultiObject(
        AbsFile(exists=True),
        xor=["in_files"],
        desc="Sparse partial atlases (PartialLabelAtlas) to merge, in input order.",
    )
    background = traits.Int(0, usedefault=True, desc="The value that is no label.")
    num_threads = traits.Int(1, usedefault=True, nohash=True, desc=SHORT["num_threads"])


class _LabelAtlasOutputSpec(TraitedSpec):
    probseg_file = File(desc="4D float32 per-label probability maps (with dense=True).")
    dseg_files = OutputMultiObject(
        File(exists=True), desc="Maximum-probability maps, one per threshold, in order."
    )
    label_table = File(exists=True, desc="The label table (BIDS dseg.tsv).")
    sparse_file = File(desc="The sparse atlas (with sparse=True).")
    n_inputs = traits.Int(desc="How many label images went in.")
    labels = traits.List(traits.Int, desc="Every label, ascending (the 4D volumes' order).")


class LabelAtlas(SimpleInterface):
    """A probabilistic atlas from label images (or merged partial atlases), in one pass.

    Writes into the node's folder what ``nipype-heatmap-atlas`` writes: the per-label
    probability maps (4D), the maximum-probability maps at each threshold, the label table
    and, with ``sparse=True``, the sparse atlas (see :mod:`nipype_heatmap.atlas`). Given
    ``partial_atlases`` instead of ``in_files``, it merges them exactly: the same atlas as
    one node over all their inputs.
    """

    input_spec = _LabelAtlasInputSpec
    output_spec = _LabelAtlasOutputSpec

    def _run_interface(self, runtime):
        from ..atlas import accumulate_labels, merge_atlases, read_label_table, write_atlas

        table = None
        if isdefined(self.inputs.label_table):
            table = read_label_table(self.inputs.label_table)
        with core_logs_in_nipype():
            if isdefined(self.inputs.partial_atlases):
                acc = merge_atlases(self.inputs.partial_atlases)
            elif isdefined(self.inputs.in_files):
                acc = accumulate_labels(
                    self.inputs.in_files,
                    background=self.inputs.background,
                    num_threads=self.inputs.num_threads,
                )
            else:
                raise ValueError("LabelAtlas needs in_files or partial_atlases")
            written = write_atlas(
                acc,
                runtime.cwd,
                atlas_name=self.inputs.atlas_name,
                thresholds=self.inputs.thresholds,
                label_table=table,
                dense=self.inputs.dense,
                sparse=self.inputs.sparse,
            )
        if "probseg" in written:
            self._results["probseg_file"] = written["probseg"]
        if "sparse" in written:
            self._results["sparse_file"] = written["sparse"]
        self._results["dseg_files"] = [v for k, v in written.items() if k.startswith("th")]
        self._results["label_table"] = written["table"]
        self._results["n_inputs"] = acc.n_inputs
        self._results["labels"] = acc.label_list
        return runtime


class _PartialLabelAtlasInputSpec(BaseInterfaceInputSpec):
    in_files = InputMultiObject(
        AbsFile(exists=True), mandatory=True, desc="One chunk of the label images, in order."
    )
    background = traits.Int(0, usedefault=True, desc="The value that is no label.")
    num_threads = traits.Int(1, usedefault=True, nohash=True, desc=SHORT["num_threads"])
    output_filename = Str(
        "partial_atlas.nii.gz",
        usedefault=True,
        desc="Bare file name of the partial atlas (a .nii or .nii.gz file).",
    )


class _PartialLabelAtlasOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="The chunk's sparse atlas (exact counts).")
    n_inputs = traits.Int(desc="How many label images this chunk holds.")


class PartialLabelAtlas(SimpleInterface):
    """Count one chunk of label images into a sparse partial atlas, for :class:`LabelAtlas`
    (``partial_atlases``): the map step of the atlas map-reduce."""

    input_spec = _PartialLabelAtlasInputSpec
    output_spec = _PartialLabelAtlasOutputSpec

    def _run_interface(self, runtime):
        from ..atlas import accumulate_labels, save_atlas

        out_file = output_in_cwd(runtime, self.inputs.output_filename)
        with core_logs_in_nipype():
            acc = accumulate_labels(
                self.inputs.in_files,
                background=self.inputs.background,
                num_threads=self.inputs.num_threads,
            )
            self._results["out_file"] = save_atlas(acc.to_sparse(), out_file)
        self._results["n_inputs"] = acc.n_inputs
        return runtime
