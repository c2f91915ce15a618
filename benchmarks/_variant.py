"""``nipype-heatmap`` with one speed trick switched off, as a whole process.

Usage: python _variant.py VARIANT -- ARGS...

Applies the patch of VARIANT, then runs ``nipype_heatmap.cli.heatmap.main(ARGS)``, as the
``nipype-heatmap`` program does. Every variant (``shipped`` too) imports the same modules
first, so that they differ only in the patch. A patch that the run never called means the
trick moved or was renamed and the measurement would be of nothing: the runner then exits
with status 3 instead of reporting a gain of zero.

Variants (see ``bench_tricks.py``):

- ``shipped``: nothing switched off;
- ``int64-sums``: exact integer sums in int64 instead of the narrowest type that cannot
  overflow (``_kernels.integer_sum_dtype``; still None beyond the exact range);
- ``no-retain``: the allocator keeps its defaults (``cli._base.retain_freed_memory`` does
  nothing);
- ``isal-reader``: gzip members inflated by ISA-L's zlib-compatible inflater instead of
  libdeflate (``io.inflating._member_inflater`` returns :func:`_inflate_with_isal` below,
  the same rules: the reader the package would have without libdeflate).
"""

from __future__ import annotations

import sys

import numpy as np

import nipype_heatmap.accumulate._kernels as kernels
import nipype_heatmap.cli._base as base
import nipype_heatmap.io.inflating as inflating
from nipype_heatmap.cli.heatmap import main as heatmap_main

CALLS = {"patched": 0}


def _counted(function):
    def wrapper(*args, **kwargs):
        CALLS["patched"] += 1
        return function(*args, **kwargs)

    return wrapper


def _int64_sums(low, high):
    limit = kernels.EXACT_INTEGER_LIMIT
    return np.dtype(np.int64) if -limit <= low and high <= limit else None


def _no_retain(*args, **kwargs) -> bool:
    return False


def _inflate_with_isal(raw, pos, out, got):
    """Inflate the gzip member at ``pos`` into ``out[got:]`` with ISA-L; return the input it
    took and the bytes it produced (the contract of libdeflate's member inflater)."""
    from isal import isal_zlib

    stream = isal_zlib.decompressobj(31)
    try:
        content = stream.decompress(memoryview(raw)[pos:], out.size - got)
    except isal_zlib.error as err:
        raise inflating.GzipError(str(err)) from err
    if not stream.eof:
        raise inflating.GzipError("the stream holds more than declared, or is truncated")
    out[got : got + len(content)] = np.frombuffer(content, np.uint8)
    return len(raw) - pos - len(stream.unused_data), len(content)


def _isal_inflater():
    return _inflate_with_isal


#: variant -> (module, attribute, replacement)
PATCHES = {
    "int64-sums": (kernels, "integer_sum_dtype", _int64_sums),
    "no-retain": (base, "retain_freed_memory", _no_retain),
    "isal-reader": (inflating, "_member_inflater", _isal_inflater),
}
VARIANTS = ("shipped", *PATCHES)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in VARIANTS or argv[1] != "--":
        print(f"usage: _variant.py {{{','.join(VARIANTS)}}} -- ARGS...", file=sys.stderr)
        return 2
    variant, args = argv[0], argv[2:]
    if variant in PATCHES:
        module, name, replacement = PATCHES[variant]
        if not hasattr(module, name):
            print(f"_variant.py: {module.__name__}.{name} is gone", file=sys.stderr)
            return 3
        setattr(module, name, _counted(replacement))
    status = heatmap_main(args)
    if status == 0 and variant in PATCHES and CALLS["patched"] == 0:
        module, name, _ = PATCHES[variant]
        print(f"_variant.py: {module.__name__}.{name} was never called", file=sys.stderr)
        return 3
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
