"""``nipype-heatmap-bids``: a BIDS-App style command for group heatmap derivatives."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from collections.abc import Sequence

from ._base import add_nprocs_option, check_report_extra, run_reporting_errors

EXAMPLES = """\
examples:
  # GM probability map from fMRIPrep outputs, 2 mm MNI grid, with a report
  nipype-heatmap-bids derivatives/fmriprep derivatives/nipype_heatmap group \\
      --suffix probseg --label GM --space MNI152NLin2009cAsym --res 2 --datatype anat --report
  # brain coverage of the resting-state runs: every run of every subject counts
  nipype-heatmap-bids derivatives/fmriprep derivatives/nipype_heatmap group \\
      --desc brain --datatype func --task rest --space MNI152NLin2009cAsym --res 2 \\
      --several-per-subject
  # lesion overlap count for three subjects; the same filters from a file
  nipype-heatmap-bids derivatives/lesions derivatives/nipype_heatmap group \\
      --label lesion --participant-label 01 02 03 --sum --no-clip \\
      --bids-filter-file filters.json   # {"space": "MNI152NLin2009cAsym", "res": "2"}
  # lesion probability with its coverage and the mask of voxels lesioned in >= 5 patients
  nipype-heatmap-bids derivatives/lesions derivatives/nipype_heatmap group \
      --label lesion --coverage --min-count 5
  # subtraction analysis: % of patients with aphasia minus % without (participants.tsv)
  nipype-heatmap-bids derivatives/lesions derivatives/nipype_heatmap group \
      --label lesion --group-column aphasia --group-a yes --group-b no

exit status: 0 on success, 1 on a bad selection or bad data (nothing is written), 2 on
usage errors.
"""


def get_parser() -> argparse.ArgumentParser:
    """Build the argument parser of ``nipype-heatmap-bids``."""
    from .._version import __version__
    from .atlas import add_atlas_options

    parser = argparse.ArgumentParser(
        prog="nipype-heatmap-bids",
        description="Group map (voxel-wise mean or sum) of BIDS inputs, written as a BIDS "
        "derivative with a JSON sidecar, dataset_description.json and an optional report.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bids_dir", help="BIDS or BIDS-derivatives dataset holding the inputs")
    parser.add_argument("output_dir", help="derivatives dataset to write (created)")
    parser.add_argument("analysis_level", choices=["group"], help="only 'group' exists")
    select = parser.add_argument_group(
        "selection (one value per entity, one file per subject and session)"
    )
    select.add_argument("--suffix", help="suffix of the inputs (default: mask; dseg with --atlas)")
    for entity, help_text in (
        ("space", "space entity (e.g. MNI152NLin2009cAsym)"),
        ("res", "res entity (e.g. 2)"),
        ("label", "label entity (e.g. lesion, GM)"),
        ("desc", "desc entity of the inputs (e.g. brain)"),
        ("datatype", "datatype (anat, func, dwi...)"),
        ("session", "session label"),
        ("task", "task label"),
        ("run", "run index"),
        ("acquisition", "acq entity"),
    ):
        select.add_argument(f"--{entity}", help=help_text)
    select.add_argument(
        "--bids-filter-file",
        metavar="FILE",
        help="JSON object of entity filters, as fMRIPrep's (null: entity absent; '*': present)",
    )
    select.add_argument("--participant-label", nargs="+", metavar="LABEL", help="subjects")
    select.add_argument(
        "--several-per-subject",
        action="store_true",
        help="allow several files per subject and session (e.g. every run); each file "
        "counts once, so subjects with more files weigh more",
    )
    parser.add_argument("--sum", dest="use_mean", action="store_false", help="sum, not mean")
    parser.add_argument(
        "--no-clip", dest="clip_to_input_range", action="store_false", help="do not clip"
    )
    parser.add_argument("--normalize", action="store_true", help="min-max scale to [0, 1]")
    parser.add_argument("--out-desc", help="desc entity of the map (default: automatic)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a map of the same name made from other inputs or parameters",
    )
    cohort = parser.add_argument_group(
        "cohort maps, from the same single pass, each a derivative of its own "
        "(desc-coverage..., desc-std..., desc-nonzero..., desc-mincount<K>...)"
    )
    cohort.add_argument("--coverage", action="store_true", help="inputs with a finite value")
    cohort.add_argument("--std", action="store_true", help="standard deviation and variance")
    cohort.add_argument("--ddof", type=int, default=1, help="of --std (default: 1)")
    cohort.add_argument(
        "--min-count", type=int, metavar="K", help="mask of voxels non-zero in >= K inputs"
    )
    cohort.add_argument("--min-fraction", type=float, metavar="F", help="K = ceil(F * N)")
    groups = parser.add_argument_group(
        "subtraction analysis by a participants.tsv column (instead of the heatmap)"
    )
    groups.add_argument("--group-column", metavar="COLUMN", help="e.g. aphasia")
    groups.add_argument("--group-a", metavar="VALUE", help="value of group A (e.g. yes)")
    groups.add_argument(
        "--group-b", metavar="VALUE", help="value of group B (default: any other value)"
    )
    groups.add_argument(
        "--participants-tsv",
        metavar="FILE",
        help="the table (default: participants.tsv of the dataset, or of the raw dataset "
        "holding it)",
    )
    atlas = parser.add_argument_group(
        "label atlas (instead of a heatmap): per-label probability maps, "
        "maximum-probability maps and a label table from label images (dseg)"
    )
    atlas.add_argument("--atlas", metavar="NAME", help="make the atlas atlas-NAME")
    add_atlas_options(atlas)
    atlas.add_argument("--sparse", action="store_true", help="also write the sparse atlas")
    parser.add_argument("--report", action="store_true", help="write the visual report")
    parser.add_argument(
        "--underlay", metavar="UNDERLAY", help="anatomical image to draw the report over"
    )
    add_nprocs_option(parser)
    parser.add_argument("--debug", action="store_true", help="tracebacks on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nipype-heatmap-bids``; return the exit status."""
    argv_used = list(sys.argv[1:] if argv is None else argv)
    parser = get_parser()
    args = parser.parse_args(argv_used)
    if (args.group_column is None) != (args.group_a is None):
        parser.error("--group-column and --group-a go together")
    if args.group_b is not None and args.group_column is None:
        parser.error("--group-b needs --group-column and --group-a")
    cohort = {
        "coverage": args.coverage,
        "std": args.std,
        "ddof": args.ddof,
        "min_count": args.min_count,
        "min_fraction": args.min_fraction,
    }
    wants_cohort = args.coverage or args.std or args.min_count or args.min_fraction
    if args.atlas and (wants_cohort or args.group_column or not args.use_mean or args.normalize):
        parser.error("--atlas makes an atlas: no heatmap, cohort or subtraction flags with it")
    if args.group_column and wants_cohort:
        parser.error("a subtraction (--group-column) does not go with cohort maps")

    def job() -> str:
        check_report_extra(args)  # before anything is read or written
        from ..api import make_maps
        from ..bids import load_filter_file, select_bids_inputs
        from ..bids.derivatives import write_group_derivative
        from ..options import CohortOptions, MapOptions

        entities = ("space", "res", "label", "desc", "datatype", "session", "task", "run")
        selection = select_bids_inputs(
            args.bids_dir,
            suffix=args.suffix or ("dseg" if args.atlas else "mask"),
            acquisition=args.acquisition,
            bids_filters=load_filter_file(args.bids_filter_file)
            if args.bids_filter_file
            else None,
            participant_label=args.participant_label,
            several_per_subject=args.several_per_subject,
            **{name: getattr(args, name) for name in entities},
        )
        flags = {
            "use_mean": args.use_mean,
            "clip_to_input_range": args.clip_to_input_range,
            "normalize": args.normalize,
        }
        command = " ".join(["nipype-heatmap-bids", *map(shlex.quote, argv_used)])
        if args.atlas:
            return _atlas(args, selection, command)
        if args.group_column:
            return _subtraction(args, selection, command)
        cohort_options = CohortOptions(**cohort)
        with tempfile.TemporaryDirectory() as tmp:
            _, cohort_files = make_maps(
                selection.files,
                os.path.join(tmp, "heatmap.nii.gz"),
                options=MapOptions(**flags),
                cohort=cohort_options,
                debug=args.debug,
                progress=False if args.quiet else None,
                num_threads=args.num_threads,
            )
            heatmap = cohort_files.pop("heatmap")
            outputs = write_group_derivative(
                heatmap,
                args.output_dir,
                selection,
                out_desc=args.out_desc,
                overwrite=args.overwrite,
                command=command,
                generate_report=args.report,
                underlay=args.underlay,
                **flags,
            )
            extra: dict[str, str] = {}
            if cohort_files:
                from ..bids.derivatives import write_cohort_derivatives

                table = cohort_files.pop("table", None)
                extra = write_cohort_derivatives(
                    cohort_files,
                    args.output_dir,
                    selection,
                    table=table,
                    ddof=args.ddof,
                    min_count=cohort_options.min_count_for(len(selection.files)),
                    overwrite=args.overwrite,
                    command=command,
                )
        return "\n".join(filter(None, [outputs.out_file, *extra.values(), outputs.report_html]))

    return run_reporting_errors("nipype-heatmap-bids", job, args)


def _atlas(args: argparse.Namespace, selection, command: str) -> str:
    """The label atlas of the selected images, as a BIDS derivative."""
    from ..atlas import accumulate_labels, read_label_table
    from ..bids.derivatives import check_atlas_derivative, write_atlas_derivatives

    options = {"atlas_name": args.atlas, "thresholds": args.thresholds}
    check_atlas_derivative(  # before any input is read
        args.output_dir, selection, background=args.background, overwrite=args.overwrite, **options
    )
    table = read_label_table(args.label_table) if args.label_table else None
    acc = accumulate_labels(
        selection.files, background=args.background, num_threads=args.num_threads
    )
    stored = write_atlas_derivatives(
        acc,
        args.output_dir,
        selection,
        label_table=table,
        sparse=args.sparse,
        overwrite=args.overwrite,
        command=command,
        **options,
    )
    report = None
    if args.report:
        from ..report import write_atlas_report

        report = write_atlas_report(
            stored, acc, args.output_dir, underlay=args.underlay, command=command
        )
    return "\n".join(filter(None, [*stored.values(), report]))


def _subtraction(args: argparse.Namespace, selection, command: str) -> str:
    """``--group-column``: percent of group A minus percent of group B, BIDS-named."""
    import dataclasses

    from ..api import compute_subtraction
    from ..bids import participants_groups
    from ..bids.derivatives import write_cohort_derivatives
    from ..io import write_atomic

    files_a, files_b, groups = participants_groups(
        selection, args.group_column, args.group_a, args.group_b, args.participants_tsv
    )
    both = dataclasses.replace(
        selection,
        files=files_a + files_b,
        subjects=sorted({*groups["SubjectsA"], *groups["SubjectsB"]}),
    )
    maps = compute_subtraction(files_a, files_b, num_threads=args.num_threads)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {
            name: write_atomic([img.to_bytes()], os.path.join(tmp, f"{name}.nii.gz"))
            for name, img in maps.items()
        }
        written = write_cohort_derivatives(
            paths,
            args.output_dir,
            both,
            groups=groups,
            overwrite=args.overwrite,
            command=command,
        )
    return "\n".join(written.values())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
