"""The reference algorithm: docs/semantics.md as a plain nibabel loop, for benchmarks and checks.

Usage: python reference_loop.py IN_FOLDER OUT_FILE [--sum] [--no-clip] [--normalize]

One volume at a time through ``get_fdata`` (float64), NaN/Inf as missing, mean or sum, then
clip, then normalize; written with the first input's affine and header as float32. This is
what a careful user writes without this package.
"""

from __future__ import annotations

import os
import sys

import nibabel as nb
import numpy as np


def reference_heatmap(
    files: list[str],
    use_mean: bool = True,
    clip_to_input_range: bool = True,
    normalize: bool = False,
) -> np.ndarray:
    """The heatmap (docs/semantics.md §3-§4) of ``files`` as a plain nibabel loop; float32."""
    first = nb.load(files[0])
    total = np.zeros(first.shape[:3])
    count = np.zeros(first.shape[:3])
    lo, hi = np.inf, -np.inf
    for path in files:
        data = nb.load(path).get_fdata().reshape(first.shape[:3])
        finite = np.isfinite(data)
        total += np.where(finite, data, 0.0)
        count += finite
        if finite.any():
            lo, hi = min(lo, data[finite].min()), max(hi, data[finite].max())
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(count > 0, total / count, np.nan) if use_mean else total
    if clip_to_input_range:
        out = np.clip(out, lo, hi)
    if normalize:
        vals = out[np.isfinite(out)]
        if vals.size and vals.max() > vals.min():
            out = (out - vals.min()) / (vals.max() - vals.min())
    return out.astype(np.float32)


def main(argv: list[str]) -> int:
    folder, out_file = argv[0], argv[1]
    files = sorted(
        (
            os.path.join(folder, f)
            for f in os.listdir(folder)
            if f.endswith((".nii", ".nii.gz")) and not f.startswith(".")
        ),
        key=os.fsencode,
    )
    out = reference_heatmap(
        files, "--sum" not in argv, "--no-clip" not in argv, "--normalize" in argv
    )
    first = nb.load(files[0])
    header = first.header.copy()
    header.set_data_dtype(np.float32)
    nb.Nifti1Image(out, first.affine, header).to_filename(out_file)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
