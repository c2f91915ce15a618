"""Input and output, split by concern as nibabel splits ``loadsave``/``orientations``.

- :mod:`~nipype_heatmap.io.discovery`: which files are inputs (folder listing, file
  identity, the tool's own earlier outputs);
- :mod:`~nipype_heatmap.io.reading`: the one read path (gzip by content, verified), the one
  validated header step, read-ahead threads;
- :mod:`~nipype_heatmap.io.grid`: the reference voxel grid and lossless re-ordering;
- :mod:`~nipype_heatmap.io.writing`: output name checks, the writability probe, the atomic
  writer.

Nothing here imports Nipype. Every error names the file it is about, says what was expected
and what was found, and what to do.
"""

from .discovery import (
    NIFTI_SUFFIXES,
    file_identity,
    find_nifti_files,
    is_nifti_name,
    is_previous_heatmap,
    same_file,
    split_nifti_name,
    warn_duplicates,
)
from .grid import AFFINE_TOL_MM, Grid, grid_distance_mm
from .reading import (
    Volume,
    iter_volumes,
    load_volume,
    make_volume,
    min_max,
    parse_header,
    read_file_bytes,
    read_header,
    read_nifti_data,
    read_volume,
)
from .writing import (
    check_output_filename,
    prepare_output,
    remove_stale_temporaries,
    save_atomic,
    write_atomic,
)

__all__ = [
    "AFFINE_TOL_MM",
    "NIFTI_SUFFIXES",
    "Grid",
    "Volume",
    "check_output_filename",
    "file_identity",
    "find_nifti_files",
    "grid_distance_mm",
    "is_nifti_name",
    "is_previous_heatmap",
    "iter_volumes",
    "load_volume",
    "make_volume",
    "min_max",
    "parse_header",
    "prepare_output",
    "read_file_bytes",
    "read_header",
    "read_nifti_data",
    "read_volume",
    "remove_stale_temporaries",
    "same_file",
    "save_atomic",
    "split_nifti_name",
    "warn_duplicates",
    "write_atomic",
]
