"""``nipype-heatmap-bids``: a BIDS-App style command for group heatmap derivatives."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence

from .cli import run_reporting_errors

EXAMPLES = """\
examples:
  # lesion probability map of all subjects' masks, as a BIDS derivative with a report
  nipype-heatmap-bids derivatives/lesions derivatives/nipype_heatmap group \\
      --space MNI152NLin2009cAsym --label lesion --suffix mask --report
  # overlap count for three subjects
  nipype-heatmap-bids derivatives/lesions derivatives/nipype_heatmap group \\
      --space MNI152NLin2009cAsym --label lesion --participant-label 01 02 03 --sum --no-clip

exit status: 0 on success, 1 on a bad selection or bad data (nothing is written), 2 on
usage errors.
"""


def get_parser() -> argparse.ArgumentParser:
    """Build the argument parser of ``nipype-heatmap-bids``."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="nipype-heatmap-bids",
        description="Group heatmap (voxel-wise mean or sum) of BIDS inputs, written as a BIDS "
        "derivative with a JSON sidecar, dataset_description.json and optional report.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bids_dir", help="BIDS or BIDS-derivatives dataset holding the inputs")
    parser.add_argument("output_dir", help="derivatives dataset to write (created)")
    parser.add_argument("analysis_level", choices=["group"], help="only 'group' exists")
    parser.add_argument("--space", required=True, help="space entity of the inputs")
    parser.add_argument("--label", help="label entity of the inputs (e.g. lesion, GM)")
    parser.add_argument("--desc", help="desc entity of the inputs")
    parser.add_argument("--suffix", default="mask", help="suffix of the inputs (default: mask)")
    parser.add_argument("--participant-label", nargs="+", metavar="LABEL", help="subjects")
    parser.add_argument("--sum", dest="use_mean", action="store_false", help="sum, not mean")
    parser.add_argument(
        "--no-clip", dest="clip_to_input_range", action="store_false", help="do not clip"
    )
    parser.add_argument("--normalize", action="store_true", help="min-max scale to [0, 1]")
    parser.add_argument("--out-desc", help="desc entity of the map (default: mean/count/union)")
    parser.add_argument("--report", action="store_true", help="write the visual report")
    parser.add_argument(
        "--underlay",
        "--anat",  # the earlier name, still accepted
        dest="underlay",
        metavar="UNDERLAY",
        help="anatomical image to draw the report over (resampled to the map's grid)",
    )
    parser.add_argument("--debug", action="store_true", help="tracebacks and statistics")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nipype-heatmap-bids``; return the exit status."""
    args = get_parser().parse_args(argv)

    def job() -> str:
        from .bids import select_bids_inputs, write_group_derivative
        from .core import write_heatmap

        selection = select_bids_inputs(
            args.bids_dir,
            space=args.space,
            label=args.label,
            desc=args.desc,
            suffix=args.suffix,
            participant_label=args.participant_label,
        )
        flags = {
            "use_mean": args.use_mean,
            "clip_to_input_range": args.clip_to_input_range,
            "normalize": args.normalize,
        }
        with tempfile.TemporaryDirectory() as tmp:
            heatmap = write_heatmap(
                selection.files,
                os.path.join(tmp, "heatmap.nii.gz"),
                debug=args.debug,
                progress=False if args.quiet else None,
                **flags,
            )
            outputs = write_group_derivative(
                heatmap,
                args.output_dir,
                selection,
                out_desc=args.out_desc,
                generate_report=args.report,
                underlay=args.underlay,
                **flags,
            )
        return "\n".join(filter(None, [outputs.out_file, outputs.report_html]))

    return run_reporting_errors("nipype-heatmap-bids", job, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
