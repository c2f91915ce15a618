"""Files in, maps out: the heatmap, the cohort maps beside it, the subtraction of two groups."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import nibabel as nb
import numpy as np

from .._docs import fill_doc
from ..accumulate import HeatmapAccumulator, finite_range
from ..io import (
    OutputPlan,
    check_output_filename,
    load_image,
    warn_duplicates,
)
from ..maps import subtraction_images
from ..options import CohortOptions, MapOptions
from .inputs import accumulate_files, collect_inputs
from .outputs import beside, plan_maps_of, write_maps

__all__ = [
    "DEFAULT_OUTPUT_FILENAME",
    "compute_heatmap",
    "compute_subtraction",
    "generate_heatmap_volume",
    "make_maps",
    "write_cohort_maps",
    "write_heatmap",
    "write_subtraction",
]

LOGGER = logging.getLogger(__name__)

DEFAULT_OUTPUT_FILENAME = "heatmap_volume.nii.gz"


@fill_doc
def compute_heatmap(
    in_files: Sequence[str | os.PathLike[str]],
    use_mean: bool = True,
    clip_to_input_range: bool = True,
    normalize: bool = False,
    debug: bool = False,
    *,
    progress: bool | None = None,
    num_threads: int | None = None,
) -> nb.Nifti1Image:
    """Compute the heatmap of an explicit list of files, without writing it.

    Parameters
    ----------
    %(in_files)s
    %(use_mean)s
    %(clip_to_input_range)s
    %(normalize)s
    %(debug)s
    %(progress)s
    %(num_threads)s

    Returns
    -------
    nibabel.Nifti1Image
        float32 heatmap (a ``Nifti2Image`` when the first input is NIfTI-2).

    Raises
    ------
    ValueError
        If ``in_files`` is empty, or an input cannot be read, is not 3D or is not on the
        first file's grid (the message names the file).
    FileNotFoundError
        If an input does not exist.
    """
    files = [os.path.abspath(os.fspath(f)) for f in in_files]
    warn_duplicates(files)
    acc = accumulate_files(files, debug=debug, progress=progress, num_threads=num_threads)
    img = acc.map_image(MapOptions(use_mean, clip_to_input_range, normalize))
    if debug:
        _log_statistics(acc, img, use_mean)
    return img


def _log_statistics(
    acc: HeatmapAccumulator, img: nb.spatialimages.SpatialImage, use_mean: bool
) -> None:
    data = np.asanyarray(img.dataobj)
    lo, hi = finite_range(data)
    LOGGER.info(
        "%s; output %s range [%s, %s], %d non-zero voxel(s)",
        acc.summary(),
        "mean" if use_mean else "sum",
        lo,
        hi,
        int(np.count_nonzero(np.nan_to_num(data))),
    )


@fill_doc
def write_heatmap(
    in_files: Sequence[str | os.PathLike[str]],
    out_file: str | os.PathLike[str],
    use_mean: bool = True,
    clip_to_input_range: bool = True,
    normalize: bool = False,
    debug: bool = False,
    *,
    progress: bool | None = None,
    num_threads: int | None = None,
) -> str:
    """Compute the heatmap of an explicit list of files and write it atomically.

    The output is checked (name, writable folder, not one of the inputs) before any input
    is read; the file is replaced only after full success, and a failure leaves no partial
    file.

    Parameters
    ----------
    %(in_files)s
    out_file : str or os.PathLike
        Where to write; the name must end in ``.nii`` or ``.nii.gz`` (gzip for ``.gz``).
        Missing parent folders are created.
    use_mean, clip_to_input_range, normalize, debug, progress, num_threads
        As in :func:`compute_heatmap`.

    Returns
    -------
    str
        The absolute path of the written heatmap.

    Raises
    ------
    OSError
        If the output location is not writable (raised before any input is read).
    ValueError
        As in :func:`compute_heatmap`, or if ``out_file`` is one of the inputs.
    """
    written = write_cohort_maps(
        in_files,
        out_file,
        options=MapOptions(use_mean, clip_to_input_range, normalize),
        debug=debug,
        progress=progress,
        num_threads=num_threads,
    )
    return written["heatmap"]


@fill_doc
def make_maps(
    in_files: Iterable[str | os.PathLike[str]],
    out_file: str | os.PathLike[str],
    *,
    options: MapOptions = MapOptions(),
    cohort: CohortOptions = CohortOptions(),
    state_file: str | os.PathLike[str] | None = None,
    debug: bool = False,
    progress: bool | None = None,
    num_threads: int | None = None,
) -> tuple[HeatmapAccumulator, dict[str, str]]:
    """Write the heatmap and, from the same single pass, the cohort maps beside it.

    Beside ``<stem>.nii.gz``: ``<stem>_coverage``, ``<stem>_std``, ``<stem>_variance``,
    ``<stem>_overlap`` (non-zero count), ``<stem>_mincount<k>`` (mask) and the table
    ``<stem>_overlap.tsv`` (voxels surviving each k), as ``cohort`` asks. With
    ``state_file``, the run is also saved as a state (tracking every cohort statistic and
    each input's content hash), which :func:`update_state` adds to and removes from later.
    All files are planned before any input is read and replaced together.

    Parameters
    ----------
    in_files : iterable of str or os.PathLike
        The 3D NIfTI files, in order (the first sets the grid and header), or folders of
        them (their NIfTI files, sorted by name).
    out_file : str or os.PathLike
        The heatmap (``.nii`` or ``.nii.gz``).
    options : MapOptions
        What the heatmap is (mean or sum, clipping, normalization).
    cohort : CohortOptions
        Which cohort maps to write beside it.
    state_file : str or os.PathLike, optional
        Also save the run as a state here.
    %(debug)s
    %(progress)s
    %(num_threads)s

    Returns
    -------
    accumulator, dict
        The accumulator (its ``records`` list the inputs, in order), and role
        (``heatmap``, each cohort map's name, ``table``, ``state``) -> path.

    Raises
    ------
    ValueError, OSError
        As :func:`write_heatmap`; ValueError if two outputs are one file.
    """
    with OutputPlan() as plan:
        if state_file is not None:
            plan.add("state", state_file)
        files = plan_maps_of(plan, in_files, out_file, cohort)
        warn_duplicates(files)
        acc = accumulate_files(
            files,
            overlap=cohort.overlap or state_file is not None,
            spread=cohort.std or state_file is not None,
            digests=state_file is not None,
            debug=debug,
            progress=progress,
            num_threads=num_threads,
        )
        write_maps(acc, plan, options, cohort)
        written = plan.commit()
    if debug:
        _log_statistics(acc, load_image(written["heatmap"]), options.use_mean)
    LOGGER.info("Wrote %s", ", ".join(written.values()))
    return acc, written


def write_cohort_maps(
    in_files: Iterable[str | os.PathLike[str]],
    out_file: str | os.PathLike[str],
    *,
    options: MapOptions = MapOptions(),
    cohort: CohortOptions = CohortOptions(),
    state_file: str | os.PathLike[str] | None = None,
    debug: bool = False,
    progress: bool | None = None,
    num_threads: int | None = None,
) -> dict[str, str]:
    """Write the heatmap and the cohort maps beside it (and a state); return role -> path.

    See :func:`make_maps`, which also returns the accumulator.
    """
    return make_maps(
        in_files,
        out_file,
        options=options,
        cohort=cohort,
        state_file=state_file,
        debug=debug,
        progress=progress,
        num_threads=num_threads,
    )[1]


@fill_doc
def generate_heatmap_volume(
    nii_folder: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    output_filename: str = DEFAULT_OUTPUT_FILENAME,
    use_mean: bool = True,
    clip_to_input_range: bool = True,
    normalize: bool = False,
    debug: bool = False,
    *,
    progress: bool | None = None,
    num_threads: int | None = None,
) -> str:
    """Make the voxel-wise mean or sum of all 3D NIfTI files in a folder and save it.

    Parameters
    ----------
    nii_folder : str or os.PathLike
        Folder whose ``*.nii``/``*.nii.gz`` files (not recursive, hidden files skipped) are
        the inputs, taken in byte order of their names.
    output_path : str or os.PathLike
        Folder to write into; created with parents. It may be ``nii_folder`` itself: a
        heatmap this tool wrote at the output's name is then not taken as an input.
    %(output_filename)s
    %(use_mean)s
    %(clip_to_input_range)s
    %(normalize)s
    %(debug)s
    %(progress)s
    %(num_threads)s

    Returns
    -------
    str
        Absolute path of the written heatmap.

    Raises
    ------
    FileNotFoundError
        If ``nii_folder`` is missing, not a folder, or holds no NIfTI file.
    ValueError
        If ``output_filename`` is not a bare NIfTI name, another file is at the output's
        name, or an input cannot be read, is not 3D, or is not on the first file's grid
        (the message names the file).
    OSError
        If the output location is not writable (checked before any input is read).

    Examples
    --------
    >>> from nipype_heatmap import generate_heatmap_volume
    >>> out = generate_heatmap_volume("lesion_masks", "derivatives",
    ...                               "lesion_overlap.nii.gz", use_mean=False,
    ...                               clip_to_input_range=False)
    >>> out  # doctest: +ELLIPSIS
    '.../derivatives/lesion_overlap.nii.gz'
    """
    check_output_filename(output_filename)
    folder = Path(nii_folder)
    if not folder.is_dir():
        what = (
            "is not a folder; pass a folder of NIfTI files"
            if folder.exists()
            else "does not exist"
        )
        raise FileNotFoundError(f"{folder}: input folder {what}")
    LOGGER.info("%s the volumes of %s", "Averaging" if use_mean else "Summing", folder)
    return write_heatmap(
        [folder],
        os.path.join(os.fspath(output_path), output_filename),
        use_mean,
        clip_to_input_range,
        normalize,
        debug,
        progress=progress,
        num_threads=num_threads,
    )


def write_subtraction(
    group_a: Sequence[str | os.PathLike[str]],
    group_b: Sequence[str | os.PathLike[str]],
    out_file: str | os.PathLike[str],
    *,
    num_threads: int | None = None,
) -> dict[str, str]:
    """Write the subtraction map of two groups (percent of A minus percent of B) and both
    groups' percent maps beside it (``<stem>_percentA``, ``<stem>_percentB``). Each group
    is files or folders of them (:func:`collect_inputs`).

    Raises
    ------
    ValueError
        If a group is empty, an output is an input of either group, or the groups are not
        on one grid.
    """
    with OutputPlan() as plan:
        out_file = plan.add("subtraction", out_file)
        plan.add("percent_a", beside(out_file, "percentA"))
        plan.add("percent_b", beside(out_file, "percentB"))
        files_a = collect_inputs(group_a, plan, refuse=False)
        files_b = collect_inputs(group_b, plan, refuse=False)
        plan.refuse_inputs(files_a, "group A input")
        plan.refuse_inputs(files_b, "group B input")
        for name, img in compute_subtraction(files_a, files_b, num_threads=num_threads).items():
            plan.write_image(name, img)
        return plan.commit()


def compute_subtraction(
    group_a: Sequence[str | os.PathLike[str]],
    group_b: Sequence[str | os.PathLike[str]],
    *,
    num_threads: int | None = None,
) -> dict[str, nb.Nifti1Image]:
    """The subtraction images of two groups (see
    :func:`nipype_heatmap.maps.subtraction_images`).

    Raises
    ------
    ValueError
        If a group is empty or the groups are not on one grid.
    """
    if not group_a or not group_b:
        raise ValueError("a subtraction needs files in both groups")
    acc_a = accumulate_files(group_a, num_threads=num_threads)
    acc_b = accumulate_files(group_b, num_threads=num_threads)
    return subtraction_images(acc_a, acc_b)
