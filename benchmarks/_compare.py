"""Compare outputs: NIfTI files voxel by voxel, other files byte by byte.

Usage: python _compare.py A1 B1 [A2 B2 ...]; prints a JSON list, one result per pair.

Two NIfTI files are identical when their voxels have the same type and the same bits (NaN
where the other has NaN). Otherwise the result says how far apart they are: voxels that
differ, the largest absolute difference and, for float32 maps, in units in the last place
(ulps: how many float32 values lie between the two), and voxels that are NaN in one only.
Headers are not compared (a version writes its own ``descrip``), affines are.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nb
import numpy as np


def _ordered(x: np.ndarray) -> np.ndarray:
    """float32 values as integers in the order of the values (adjacent floats differ by 1)."""
    bits = x.view(np.int32).astype(np.int64)
    return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)


def compare_images(a: str, b: str) -> dict[str, object]:
    """How two NIfTI files' voxels differ (see the module doc)."""
    img_a, img_b = nb.load(a), nb.load(b)
    x, y = np.asanyarray(img_a.dataobj), np.asanyarray(img_b.dataobj)
    result: dict[str, object] = {"a": a, "b": b, "kind": "nifti"}
    if x.shape != y.shape:
        return {**result, "identical": False, "note": f"shape {x.shape} against {y.shape}"}
    same_affine = bool(np.array_equal(img_a.affine, img_b.affine))
    result["same_affine"] = same_affine
    if x.dtype == y.dtype and x.tobytes() == y.tobytes():
        return {**result, "identical": same_affine, "dtype": str(x.dtype)}
    result["identical"] = False
    result["dtype"] = str(x.dtype) if x.dtype == y.dtype else f"{x.dtype} against {y.dtype}"
    xf, yf = x.astype(np.float64), y.astype(np.float64)
    nan_x, nan_y = np.isnan(xf), np.isnan(yf)
    both = ~nan_x & ~nan_y
    diff = np.abs(xf[both] - yf[both])
    result["voxels_differing"] = int(np.count_nonzero(diff)) + int(np.count_nonzero(nan_x ^ nan_y))
    result["nan_mismatch"] = int(np.count_nonzero(nan_x ^ nan_y))
    result["max_abs"] = float(diff.max()) if diff.size else 0.0
    scale = np.maximum(np.abs(xf[both]), np.abs(yf[both]))
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(scale > 0, diff / scale, 0.0)
    result["max_rel"] = float(rel.max()) if rel.size else 0.0
    result["max_ulps"] = None
    if x.dtype == y.dtype == np.float32:
        ulps = np.abs(_ordered(x[both]) - _ordered(y[both]))
        result["max_ulps"] = int(ulps.max()) if ulps.size else 0
    return result


def compare_files(a: str, b: str) -> dict[str, object]:
    """Compare two files: NIfTI voxel by voxel, anything else byte by byte."""
    if a.endswith((".nii", ".nii.gz")):
        return compare_images(a, b)
    same = Path(a).read_bytes() == Path(b).read_bytes()
    result: dict[str, object] = {"a": a, "b": b, "kind": "bytes", "identical": same}
    if not same:
        la, lb = Path(a).read_text().splitlines(), Path(b).read_text().splitlines()
        changed = sum(p != q for p, q in zip(la, lb, strict=False)) + abs(len(la) - len(lb))
        result["note"] = f"{changed} of {max(len(la), len(lb))} lines differ"
    return result


def main(argv: list[str]) -> int:
    if not argv or len(argv) % 2:
        print(__doc__.split("\n")[2], file=sys.stderr)
        return 2
    pairs = zip(argv[::2], argv[1::2], strict=True)
    print(json.dumps([compare_files(a, b) for a, b in pairs]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
