"""Input and output, split by concern as nibabel splits ``loadsave``/``orientations``.

- :mod:`~nipype_heatmap.io.discovery`: which files are inputs (folder listing, file
  identity, the tool's own earlier outputs);
- :mod:`~nipype_heatmap.io.reading`: the one read path (regular files only, gzip by
  content, bounded and verified), the one validated header step, read-ahead threads;
- :mod:`~nipype_heatmap.io.grid`: the reference grid and lossless re-ordering;
- :mod:`~nipype_heatmap.io.plan`: the output plan of a run (every file it writes, checked
  before anything is read, committed together);
- :mod:`~nipype_heatmap.io.writing`: output names, temporary files, gzip, NIfTI bytes;
- :mod:`~nipype_heatmap.io.locking`: exclusive locks between processes;
- :mod:`~nipype_heatmap.io.statefile`: NIfTI files with JSON metadata and a checksum
  (saved states, sparse atlases);
- :mod:`~nipype_heatmap.io.tables`: JSON and TSV text.

Nothing here imports Nipype. Every error names the file it is about, says what was expected
and what was found, and what to do.
"""

from .discovery import (
    NIFTI_SUFFIXES,
    file_identity,
    find_nifti_files,
    is_nifti_name,
    is_own_file,
    same_file,
    split_nifti_name,
    warn_duplicates,
)
from .grid import AFFINE_TOL_MM, Grid, grid_distance_mm
from .locking import LockTimeout, locked
from .plan import (
    CommitInterrupted,
    OutputPlan,
    PlannedOutput,
    recover_interrupted_commits,
    same_target,
    write_atomic,
)
from .reading import (
    ReadAhead,
    Volume,
    check_volume_header,
    file_digest,
    load_image,
    make_volume,
    parse_header,
    read_header,
    read_nifti_data,
    read_volume,
)
from .tables import json_text, tsv_text
from .writing import check_output_filename, header_bytes

__all__ = [
    "AFFINE_TOL_MM",
    "NIFTI_SUFFIXES",
    "CommitInterrupted",
    "Grid",
    "LockTimeout",
    "OutputPlan",
    "PlannedOutput",
    "ReadAhead",
    "Volume",
    "check_output_filename",
    "check_volume_header",
    "file_digest",
    "file_identity",
    "find_nifti_files",
    "grid_distance_mm",
    "header_bytes",
    "is_nifti_name",
    "is_own_file",
    "json_text",
    "load_image",
    "locked",
    "make_volume",
    "parse_header",
    "read_header",
    "read_nifti_data",
    "read_volume",
    "recover_interrupted_commits",
    "same_file",
    "same_target",
    "split_nifti_name",
    "tsv_text",
    "warn_duplicates",
    "write_atomic",
]
