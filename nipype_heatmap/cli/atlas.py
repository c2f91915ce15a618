"""The ``nipype-heatmap-atlas`` command: a probabilistic atlas from label images."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = [
    "EXAMPLES",
    "add_atlas_options",
    "get_parser",
    "main",
    "run",
]

EXAMPLES = """\
examples:
  # per-label probability maps, max-probability maps at 0/25/50 %, label table
  nipype-heatmap-atlas segmentations/ -o atlas/ --label-table FreeSurferColorLUT.txt
  # a 300-area parcellation: write the sparse form instead of the dense 4D
  nipype-heatmap-atlas parcellations/ -o atlas/ --sparse --atlas-name Cohort
  # map-reduce: one sparse partial atlas per chunk (cluster jobs), then merge them
  nipype-heatmap-atlas chunk1/ -o part1/ --sparse --no-maps
  nipype-heatmap-atlas --merge part1/atlas-heatmap_desc-sparse_probseg.nii.gz \\
      part2/atlas-heatmap_desc-sparse_probseg.nii.gz -o atlas/

exit status: 0 on success, 1 on bad input data or an unwritable output, 2 on usage errors.
"""


def get_parser() -> argparse.ArgumentParser:
    """Build the argument parser of ``nipype-heatmap-atlas``."""
    from .._version import __version__
    from ._base import add_nprocs_option

    parser = argparse.ArgumentParser(
        prog="nipype-heatmap-atlas",
        description=(
            "Probabilistic atlas from co-registered label images: per-label probability "
            "maps (one 4D image), maximum-probability maps at thresholds, and a label "
            "table, in one pass over the inputs."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="a folder (its *.nii/*.nii.gz files, sorted by name) or a label image",
    )
    parser.add_argument("-o", "--output-dir", required=True, metavar="OUT_DIR")
    parser.add_argument(
        "--atlas-name",
        default="heatmap",
        metavar="NAME",
        help="the atlas-<NAME> entity of the output names (letters and digits; default: heatmap)",
    )
    add_atlas_options(parser)
    parser.add_argument(
        "--sparse",
        action="store_true",
        help="write the sparse atlas (labels and counts per voxel; exact, mergeable) "
        "instead of the dense 4D probability image",
    )
    parser.add_argument(
        "--dense",
        action="store_true",
        help="with --sparse, also write the dense 4D probability image",
    )
    parser.add_argument(
        "--no-maps",
        action="store_true",
        help="with --sparse, write only the sparse atlas (a partial atlas to --merge later)",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="SPARSE_ATLAS",
        help="merge sparse (partial) atlases exactly and write the atlas of all their inputs",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="also write the visual report (max-probability map in the labels' colours and "
        "the label table; needs the 'report' extra)",
    )
    parser.add_argument("--underlay", metavar="UNDERLAY", help="anatomical image for the report")
    add_nprocs_option(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("--debug", action="store_true", help="verbose logs and tracebacks")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def add_atlas_options(group) -> None:
    """The options of an atlas shared with ``nipype-heatmap-bids --atlas``: background,
    thresholds, label table."""
    group.add_argument(
        "--background",
        type=int,
        default=0,
        help="the label value that is no label (default: 0)",
    )
    group.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        default=[0.0, 25.0, 50.0],
        metavar="PERCENT",
        help="a maximum-probability map for each (default: 0 25 50)",
    )
    group.add_argument(
        "--label-table",
        metavar="FILE",
        help="label names and colours: a BIDS dseg.tsv or a FreeSurfer colour LUT",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nipype-heatmap-atlas``; return the exit status (0 ok, 1 bad input, 2 usage)."""
    from ._base import run_reporting_errors

    argv_used = list(sys.argv[1:] if argv is None else argv)
    parser = get_parser()
    args = parser.parse_args(argv_used)
    if bool(args.inputs) == bool(args.merge):
        parser.error("give INPUT label images, or --merge SPARSE_ATLAS files (not both)")
    if args.report and args.no_maps:
        parser.error("--report draws the maps: not with --no-maps")
    if args.no_maps and not args.sparse:
        parser.error("--no-maps needs --sparse (there would be nothing to write)")

    def job() -> str:
        from ._base import check_report_extra

        check_report_extra(args)  # before anything is read or written
        from ..api import collect_inputs
        from ..atlas import (
            accumulate_labels,
            atlas_names,
            merge_atlases,
            plan_atlas,
            read_label_table,
            write_atlas_outputs,
        )
        from ..io import OutputPlan

        thresholds = () if args.no_maps else args.thresholds
        with OutputPlan() as plan:  # every output checked before anything is read
            plan_atlas(
                plan,
                args.output_dir,
                atlas_names(args.atlas_name, thresholds),
                dense=(args.dense or not args.sparse) and not args.no_maps,
                sparse=args.sparse,
            )
            table = read_label_table(args.label_table) if args.label_table else None
            if args.merge:
                plan.refuse_inputs(args.merge, "partial atlas")
                acc = merge_atlases(args.merge)
            else:
                files = collect_inputs(args.inputs, plan)
                acc = accumulate_labels(
                    files, background=args.background, num_threads=args.num_threads
                )
            write_atlas_outputs(acc, plan, thresholds=thresholds, label_table=table)
            written = {k: v for k, v in plan.commit().items() if not k.endswith("_sidecar")}
        if args.report:
            from ..report import write_atlas_report

            written["report"] = write_atlas_report(
                written,
                acc,
                os.path.abspath(args.output_dir),
                underlay=args.underlay,
                command=shlex.join(["nipype-heatmap-atlas", *argv_used]),
            )
        return "\n".join(written.values())

    return run_reporting_errors("nipype-heatmap-atlas", job, args)


def run() -> NoReturn:
    """The ``nipype-heatmap-atlas`` program."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
