"""Shared parameter documentation, written once and filled into docstrings (as nilearn's
``fill_doc``), plus the one-sentence descriptions that traits and command-line flags reuse."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

#: One sentence per option, for trait ``desc=`` and ``--help``.
SHORT = {
    "use_mean": "Voxel-wise mean (probability map); False gives the sum (count map).",
    "clip_to_input_range": "Clip the map to the range of all finite input values.",
    "normalize": "Min-max scale the finite values of the map to [0, 1].",
    "output_filename": "Bare file name of the heatmap, ending in .nii or .nii.gz.",
    "debug": "Log per-file value ranges and final statistics (does not change the map).",
    "num_threads": "Threads to use; Nipype's plugins reserve this many cores (not hashed).",
}

#: numpydoc parameter entries, filled into docstrings by :func:`fill_doc`.
docdict = {
    "use_mean": """use_mean : bool, default=True
        True for the voxel-wise mean (probability map), False for the sum (count or
        density map).""",
    "clip_to_input_range": """clip_to_input_range : bool, default=True
        Clip the map to ``[min, max]`` of all finite input values (after the mean or
        sum). For binary masks a clipped sum is the union mask.""",
    "normalize": """normalize : bool, default=False
        Min-max scale the finite values of the (clipped) map to ``[0, 1]``; skipped,
        with a log line, when the map is constant.""",
    "debug": """debug : bool, default=False
        Log per-file value ranges and the final statistics at INFO level (else DEBUG).""",
    "progress": """progress : bool or None, default=None
        Show a tqdm progress bar on stderr; None shows it only when stderr is a
        terminal.""",
    "num_threads": """num_threads : int or None, default=None
        Threads for reading, inflating and adding; None uses every CPU this process may
        use (its affinity mask, a cgroup quota, ``SLURM_CPUS_PER_TASK``), and more than
        that is never used. The result is the same for any number.""",
    "wf_num_threads": """num_threads : int, default=1
        Threads of each heatmap node; Nipype's plugins reserve that many cores for it.""",
    "in_files": """in_files : sequence of str or os.PathLike
        The 3D NIfTI files, in the order to use; the first one sets the grid and
        header.""",
    "output_filename": """output_filename : str, default="heatmap_volume.nii.gz"
        A bare file name ending in ``.nii`` or ``.nii.gz`` (gzip).""",
}


def fill_doc(func: F) -> F:
    """Fill ``%(name)s`` placeholders in a docstring from :data:`docdict`."""
    if func.__doc__:
        func.__doc__ = func.__doc__ % {k: v for k, v in docdict.items()}
    return func
