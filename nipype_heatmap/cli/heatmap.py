"""The ``nipype-heatmap`` command: parse, set up logging, call the core, map errors to codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from ._base import add_nprocs_option, run_reporting_errors

__all__ = [
    "EXAMPLES",
    "get_parser",
    "main",
    "run",
]

EXAMPLES = """\
examples:
  # lesion probability map (mean of binary masks)
  nipype-heatmap masks/ -o lesion_prob.nii.gz
  # lesion overlap count (sum, not clipped to the 0..1 input range)
  nipype-heatmap masks/ -o lesion_count.nii.gz --sum --no-clip
  # files and folders mixed; the first file sets the grid and header
  nipype-heatmap sub-01_mask.nii.gz site2/ -o consensus.nii.gz --normalize
  # a cohort that grows: save the state, then add a batch and honour a withdrawal,
  # reading only those files; the maps equal a recompute
  nipype-heatmap release1/ -o lesion_prob.nii.gz --save-state cohort_state.nii.gz
  nipype-heatmap --update cohort_state.nii.gz release2/ --remove release1/sub-017.nii.gz \
      -o lesion_prob.nii.gz --coverage --min-count 5
  # built-in demo on real brain templates (needs the 'demo' extra)
  nipype-heatmap --demo heatmap_demo/

exit status: 0 on success, 1 on bad input data or an unwritable output, 2 on usage errors.
"""


def get_parser() -> argparse.ArgumentParser:
    """Build the argument parser of ``nipype-heatmap``."""
    from .._version import __version__

    parser = argparse.ArgumentParser(
        prog="nipype-heatmap",
        description=(
            "Voxel-wise mean (probability map) or sum (count map) of many co-registered 3D "
            "NIfTI volumes, written as a float32 NIfTI with the first input's affine and header."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="a folder (its *.nii/*.nii.gz files, sorted by name) or a NIfTI file",
    )
    parser.add_argument(
        "-o", "--output", metavar="OUTPUT_FILE", help="the heatmap to write (.nii or .nii.gz)"
    )
    parser.add_argument(
        "--sum",
        dest="use_mean",
        action="store_false",
        help="voxel-wise sum (count/density map) instead of the mean",
    )
    parser.add_argument(
        "--no-clip",
        dest="clip_to_input_range",
        action="store_false",
        help="do not clip the map to the range of the input values",
    )
    parser.add_argument("--normalize", action="store_true", help="min-max scale the map to [0, 1]")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="log per-file value ranges and statistics; show tracebacks on errors",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="log warnings only, no progress bar"
    )
    add_nprocs_option(parser)
    cohort = parser.add_argument_group(
        "cohort maps, from the same single pass, written beside OUTPUT_FILE"
    )
    cohort.add_argument(
        "--coverage", action="store_true", help="_coverage: inputs with a finite value per voxel"
    )
    cohort.add_argument(
        "--std", action="store_true", help="_std and _variance across inputs, per voxel"
    )
    cohort.add_argument(
        "--ddof", type=int, default=1, help="delta degrees of freedom of --std (default: 1)"
    )
    cohort.add_argument(
        "--min-count",
        type=int,
        metavar="K",
        help="_mincountK mask: voxels non-zero in at least K inputs; _overlap.tsv: voxels "
        "surviving each K",
    )
    cohort.add_argument(
        "--min-fraction", type=float, metavar="F", help="as --min-count, with K = ceil(F * N)"
    )
    cohort.add_argument(
        "--group-b",
        nargs="+",
        metavar="INPUT",
        help="subtraction analysis: OUTPUT_FILE is percent of INPUTs (group A) minus percent "
        "of these (group B), with _percentA and _percentB beside it",
    )
    state = parser.add_argument_group(
        "saved states: cohorts that grow and shrink without re-reading every file"
    )
    state.add_argument(
        "--save-state",
        metavar="STATE_FILE",
        help="also save the run as a state (.nii.gz: sums, counts, cohort statistics and "
        "each input's content hash); with --update, where the updated state goes (default: "
        "replace STATE_FILE)",
    )
    state.add_argument(
        "--update",
        metavar="STATE_FILE",
        help="update a saved state instead of reading every file: INPUTs are added, "
        "--remove files taken out; with -o, the maps are written from the result",
    )
    state.add_argument(
        "--remove",
        nargs="+",
        metavar="FILE",
        default=[],
        help="with --update: inputs of the state to remove (each must be unchanged since it "
        "was added; its content hash is checked)",
    )
    parser.add_argument(
        "--demo",
        metavar="OUTPUT_DIR",
        help="build a small synthetic cohort from real brain templates and map it "
        "(needs: pip install 'nipype_heatmap[demo]')",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nipype-heatmap``; return the exit status (0 ok, 1 bad input, 2 usage)."""
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.demo and (args.inputs or args.output):
        parser.error("--demo takes no INPUT and no -o; it writes into OUTPUT_DIR")
    if args.remove and not args.update:
        parser.error("--remove needs --update STATE_FILE")
    if args.update:
        if args.demo or args.group_b:
            parser.error("--update does not go with --demo or --group-b")
        if not (args.inputs or args.remove or args.output):
            parser.error("--update needs INPUTs to add, --remove FILEs, or -o to write maps")
        if args.output and not args.output.endswith((".nii", ".nii.gz")):
            parser.error(f"-o {args.output}: the output name must end in .nii or .nii.gz")
    elif not args.demo:
        if not args.inputs:
            parser.error("give at least one INPUT folder or file (or --demo OUTPUT_DIR)")
        if not args.output:
            parser.error("the output file is required: -o OUTPUT_FILE")
        if not args.output.endswith((".nii", ".nii.gz")):
            parser.error(f"-o {args.output}: the output name must end in .nii or .nii.gz")

    progress = False if args.quiet else None

    def job() -> str:
        if args.demo:
            from ..demo import run_demo

            return run_demo(args.demo)
        from .. import api
        from ..options import CohortOptions, MapOptions

        options = MapOptions(args.use_mean, args.clip_to_input_range, args.normalize)
        cohort = CohortOptions(
            args.coverage, args.std, args.ddof, args.min_count, args.min_fraction
        )
        common = {"num_threads": args.num_threads, "progress": progress, "debug": args.debug}
        if args.update:
            _, written = api.update_state(
                args.update,
                add=args.inputs,
                remove=args.remove,
                out_state=args.save_state,
                out_file=args.output,
                options=options,
                cohort=cohort,
                **common,
            )
        elif args.group_b:
            written = api.write_subtraction(
                args.inputs, args.group_b, args.output, num_threads=args.num_threads
            )
        else:
            written = api.write_cohort_maps(
                args.inputs,
                args.output,
                options=options,
                cohort=cohort,
                state_file=args.save_state,
                **common,
            )
        return "\n".join(written.values())

    return run_reporting_errors("nipype-heatmap", job, args)


def run() -> NoReturn:
    """The ``nipype-heatmap`` program."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
