"""``nipype-heatmap-bids``: a BIDS-App style command for group heatmap derivatives."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import sys
from collections.abc import Sequence

from ._base import add_nprocs_option, check_report_extra, run_reporting_errors

__all__ = [
    "EXAMPLES",
    "command_line",
    "get_parser",
    "main",
]

EXAMPLES = """\
examples:
  # GM, WM and CSF probability maps from fMRIPrep outputs, 2 mm MNI grid, with reports
  nipype-heatmap-bids derivatives/fmriprep derivatives/nipype_heatmap group \\
      --suffix probseg --label GM WM CSF --space MNI152NLin2009cAsym --res 2 --report
  # lesion overlap count (subjects with two sessions: their masks averaged first)
  nipype-heatmap-bids derivatives/lesions derivatives/nipype_heatmap group \\
      --label lesion --space MNI152NLin2009cAsym --sum --no-clip \\
      --several-per-subject average
  # the same for the first session only, for three subjects; filters from a file
  nipype-heatmap-bids derivatives/lesions derivatives/nipype_heatmap group \\
      --label lesion --session pre --participant-label 01 02 03 --sum --no-clip \\
      --bids-filter-file filters.json   # {"space": "MNI152NLin2009cAsym"}
  # lesion probability with its coverage and the mask of voxels lesioned in >= 5 patients
  nipype-heatmap-bids derivatives/lesions derivatives/nipype_heatmap group \\
      --label lesion --space MNI152NLin2009cAsym --coverage --min-count 5
  # subtraction analysis: % of patients with aphasia minus % without (participants.tsv)
  nipype-heatmap-bids derivatives/lesions derivatives/nipype_heatmap group \\
      --label lesion --space MNI152NLin2009cAsym --group-column aphasia --group-a yes \\
      --group-b no --report
  # as a lab's BIDS-App wrapper calls it: a work folder, a shared pybids index
  nipype-heatmap-bids /data/derivatives/fmriprep /data/derivatives/nipype_heatmap group \\
      --participant_label 01 02 -w /scratch/work --bids-database-dir /scratch/bids_db \\
      --notrack --skip-bids-validation -v --suffix probseg --label GM \\
      --space MNI152NLin2009cAsym --res 2

rules: one file per subject (or --several-per-subject average|each-file); template spaces
only (or --allow-native-space); flags and the filter file never widen each other; several
values of an entity give one map each; nothing is written when a rule is broken.

exit status: 0 on success, 1 on a bad selection or bad data (nothing is written), 2 on
usage errors.
"""

#: Options whose values are paths: recorded absolute in the sidecars' CommandLine.
_PATH_OPTIONS = (
    "--bids-filter-file",
    "--participants-tsv",
    "--label-table",
    "--underlay",
    "-w",
    "--work-dir",
    "--bids-database-dir",
)

#: The selection flags, each taking one or more values (one map per value).
_ENTITY_FLAGS = (
    ("space", "space entity (e.g. MNI152NLin2009cAsym); a template space"),
    ("res", "res entity (e.g. 2)"),
    ("label", "label entity (e.g. lesion; GM WM CSF: one map each)"),
    ("desc", "desc entity of the inputs (e.g. brain)"),
    ("datatype", "datatype (anat, func, dwi...)"),
    ("session", "session label: the map of that session (named ses-<label>)"),
    ("task", "task label"),
    ("run", "run index"),
    ("acquisition", "acq entity"),
)


def get_parser() -> argparse.ArgumentParser:
    """Build the argument parser of ``nipype-heatmap-bids``."""
    from .._version import __version__
    from .atlas import add_atlas_options

    parser = argparse.ArgumentParser(
        prog="nipype-heatmap-bids",
        description="Group maps (voxel-wise mean or sum over subjects) of BIDS inputs, "
        "written as a BIDS derivative with JSON sidecars, dataset_description.json and "
        "optional reports.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bids_dir", help="BIDS or BIDS-derivatives dataset holding the inputs")
    parser.add_argument(
        "output_dir",
        help="derivatives dataset to write (created): a folder of its own, not derivatives/ "
        "itself, nor in or above an input dataset",
    )
    parser.add_argument(
        "analysis_level", choices=["group"], help="only 'group': the maps are group maps"
    )
    select = parser.add_argument_group(
        "selection (one value per entity and map, one file per subject)"
    )
    select.add_argument(
        "--suffix",
        nargs="+",
        action="extend",
        help="suffix of the inputs (default: mask; dseg with --atlas)",
    )
    for entity, help_text in _ENTITY_FLAGS:
        select.add_argument(
            f"--{entity}", nargs="+", action="extend", metavar=entity.upper(), help=help_text
        )
    select.add_argument(
        "--bids-filter-file",
        metavar="FILE",
        help='JSON entity filters: {"space": ..., "res": ...}, the same under "heatmap", or '
        'fMRIPrep\'s own file ({"t1w": {...}, "bold": {...}}); null: entity absent, "*": '
        "present; merged with the flags (a conflict is an error)",
    )
    select.add_argument(
        "--participant-label",
        "--participant_label",
        dest="participant_label",
        nargs="+",
        action="extend",
        metavar="LABEL",
        help="subjects (with or without sub-); the map's desc then names the subset",
    )
    select.add_argument(
        "--several-per-subject",
        choices=["average", "each-file"],
        help="how to weigh subjects with several matching files (sessions, runs): average "
        "(each subject counts once: its files averaged first, as a lesion overlap needs) or "
        "each-file (each file counts once); refused by default",
    )
    select.add_argument(
        "--allow-native-space",
        action="store_true",
        help="accept inputs in a space that is not a template (T1w, boldref...) or without "
        "a space: only for maps within one subject's own space",
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
        "label atlas (instead of a heatmap): per-label probability maps, maximum-probability "
        "maps and a label table from label images (dseg); labels named by --label-table, "
        "else by the dseg.tsv that applies to the inputs (BIDS inheritance)"
    )
    atlas.add_argument("--atlas", metavar="NAME", help="make the atlas atlas-NAME")
    add_atlas_options(atlas)
    atlas.add_argument("--sparse", action="store_true", help="also write the sparse atlas")
    parser.add_argument("--report", action="store_true", help="write the visual reports")
    parser.add_argument(
        "--underlay",
        metavar="UNDERLAY",
        help="anatomical image to draw the reports over (default: nilearn's MNI152 "
        "template for MNI152 spaces)",
    )
    app = parser.add_argument_group("BIDS-App options")
    app.add_argument(
        "-w",
        "--work-dir",
        metavar="DIR",
        help="run as a Nipype workflow in this folder, reused by later runs (its nodes are "
        "cached; the pybids index is kept in DIR/bids_db unless --bids-database-dir)",
    )
    app.add_argument(
        "--bids-database-dir",
        metavar="DIR",
        help="keep the pybids index of the input dataset here, for later calls (rebuilt when "
        "the dataset's folders change)",
    )
    app.add_argument(
        "--skip-bids-validation",
        "--skip_bids_validation",
        action="store_true",
        help="accepted for BIDS-App wrappers: nothing to skip (the inputs are not run through "
        "the BIDS validator; the files selected are read strictly)",
    )
    app.add_argument(
        "--notrack",
        action="store_true",
        help="accepted for BIDS-App wrappers: nothing to turn off (this tool sends nothing)",
    )
    app.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log messages (debug)"
    )
    add_nprocs_option(app)
    parser.add_argument("--debug", action="store_true", help="tracebacks on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def command_line(argv: Sequence[str], args: argparse.Namespace) -> str:
    """The command as run, with every path argument absolute (for ``CommandLine``)."""
    words = ["nipype-heatmap-bids"]
    positional = {args.bids_dir, args.output_dir}
    expect_path = False
    for word in argv:
        option, eq, value = word.partition("=")
        if word.startswith("-") and eq and option in _PATH_OPTIONS:
            word = f"{option}={os.path.abspath(value)}"
        elif expect_path or word in positional:
            word = os.path.abspath(word)
        expect_path = word in _PATH_OPTIONS
        words.append(shlex.quote(word))
    return " ".join(words)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nipype-heatmap-bids``; return the exit status."""
    argv_used = list(sys.argv[1:] if argv is None else argv)
    parser = get_parser()
    args = parser.parse_args(argv_used)
    if (args.group_column is None) != (args.group_a is None):
        parser.error("--group-column and --group-a go together")
    if args.group_b is not None and args.group_column is None:
        parser.error("--group-b needs --group-column and --group-a")
    wants_cohort = args.coverage or args.std or args.min_count or args.min_fraction
    if args.atlas and (wants_cohort or args.group_column or not args.use_mean or args.normalize):
        parser.error("--atlas makes an atlas: no heatmap, cohort or subtraction flags with it")
    if args.group_column and wants_cohort:
        parser.error("a subtraction (--group-column) does not go with cohort maps")
    if args.min_count is not None and args.min_fraction is not None:
        parser.error("give --min-count or --min-fraction, not both")

    def job() -> str:
        check_report_extra(args)  # before anything is read or written
        if args.verbose:
            logging.getLogger("nipype_heatmap").setLevel(logging.DEBUG)
        log = logging.getLogger("nipype_heatmap.cli")
        if args.skip_bids_validation:
            log.debug("--skip-bids-validation: nothing to skip (no BIDS validator runs)")
        if args.notrack:
            log.debug("--notrack: nothing to turn off (this tool sends nothing)")
        return _run(args, command_line(argv_used, args), log)

    return run_reporting_errors("nipype-heatmap-bids", job, args)


def _selection_arguments(args: argparse.Namespace) -> dict:
    """The arguments of :func:`nipype_heatmap.bids.select_bids_maps` from the flags."""
    database = args.bids_database_dir
    if database is None and args.work_dir:
        database = os.path.join(args.work_dir, "bids_db")
    return {
        "suffix": args.suffix or ("dseg" if args.atlas else None),
        "filter_file": args.bids_filter_file,
        "participant_label": args.participant_label,
        "several_per_subject": args.several_per_subject,
        "allow_native_space": args.allow_native_space,
        "bids_database_dir": database,
        **{name: getattr(args, name) for name, _ in _ENTITY_FLAGS},
    }


def _run(args: argparse.Namespace, command: str, log: logging.Logger) -> str:
    from ..bids import (
        select_bids_maps,
        write_atlas_maps,
        write_group_maps,
        write_subtraction_maps,
    )
    from ..options import CohortOptions, MapOptions

    selections = select_bids_maps(args.bids_dir, **_selection_arguments(args))
    common = {
        "overwrite": args.overwrite,
        "command": command,
        "report": args.report,
        "underlay": args.underlay,
        "num_threads": args.num_threads,
    }
    if (args.atlas or args.group_column) and args.work_dir:
        log.info(
            "--work-dir: the atlas and the subtraction run without Nipype; nothing is "
            "kept in %s but the pybids index",
            args.work_dir,
        )
    if args.atlas or args.group_column:
        written = []
        for selection in selections:
            if args.atlas:
                result = write_atlas_maps(
                    selection,
                    args.output_dir,
                    atlas_name=args.atlas,
                    thresholds=args.thresholds,
                    background=args.background,
                    label_table=args.label_table,
                    sparse=args.sparse,
                    **common,
                )
            else:
                result = write_subtraction_maps(
                    selection,
                    args.output_dir,
                    column=args.group_column,
                    group_a=args.group_a,
                    group_b=args.group_b,
                    participants_tsv=args.participants_tsv,
                    **common,
                )
            written += [p for r, p in result.items() if not r.endswith("_sidecar")]
        return "\n".join(written)
    options = MapOptions(args.use_mean, args.clip_to_input_range, args.normalize)
    cohort = CohortOptions(
        coverage=args.coverage,
        std=args.std,
        ddof=args.ddof,
        min_count=args.min_count,
        min_fraction=args.min_fraction,
    )
    if args.work_dir:
        results = _run_workflow(args, options, cohort, command)
    else:
        results = write_group_maps(
            selections,
            args.output_dir,
            options=options,
            cohort=cohort,
            out_desc=args.out_desc,
            progress=False if args.quiet else None,
            debug=args.debug,
            **common,
        )
    return "\n".join(
        p for result in results for r, p in result.items() if not r.endswith("_sidecar")
    )


def _run_workflow(args, options, cohort, command) -> list[dict[str, str]]:
    """``-w``: the same maps through :func:`~nipype_heatmap.workflows.init_bids_heatmap_wf`,
    in the work folder (its nodes' results are reused by later runs)."""
    from ..workflows import init_bids_heatmap_wf

    selection = _selection_arguments(args)
    selection["bids_filter_file"] = selection.pop("filter_file")
    wf = init_bids_heatmap_wf(
        suffix=selection.pop("suffix"),
        options=options,
        cohort=cohort,
        out_desc=args.out_desc,
        overwrite=args.overwrite,
        generate_report=args.report,
        num_threads=args.num_threads or 1,
        command=command,
        **selection,
    )
    wf.base_dir = os.path.abspath(args.work_dir)
    wf.inputs.inputnode.bids_dir = os.path.abspath(args.bids_dir)
    wf.inputs.inputnode.output_dir = os.path.abspath(args.output_dir)
    if args.underlay:
        wf.inputs.inputnode.underlay = os.path.abspath(args.underlay)
    try:
        with _nipype_logs(verbose=args.verbose):
            graph = wf.run()
    except RuntimeError as err:
        raise OSError(
            f"{wf.base_dir}: the workflow failed ({err}); the node's error is above, and in "
            "its crash file"
        ) from err
    sink = next(n for n in graph.nodes() if n.name == "ds_heatmap")
    return list(sink.result.outputs.written)


@contextlib.contextmanager
def _nipype_logs(*, verbose: int):
    """Nipype's own log lines for the command's duration: its workflow log at WARNING (INFO
    with -v); its interface log, which repeats this package's messages, at ERROR."""
    from nipype import config
    from nipype import logging as nipype_logging

    levels = {key: config.get("logging", key) for key in ("workflow_level", "interface_level")}
    config.set("logging", "workflow_level", "INFO" if verbose else "WARNING")
    config.set("logging", "interface_level", "ERROR")
    nipype_logging.update_logging(config)
    try:
        yield
    finally:
        for key, level in levels.items():
            config.set("logging", key, level)
        nipype_logging.update_logging(config)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
