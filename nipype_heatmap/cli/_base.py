"""What every command shares: the ``--nprocs`` option, logging to stderr, exit statuses."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from .._runtime import retain_freed_memory

__all__ = [
    "add_nprocs_option",
    "check_report_extra",
    "run_reporting_errors",
]


def add_nprocs_option(parser: argparse._ActionsContainer) -> None:
    """The ``--nprocs`` option (as fMRIPrep's), shared by both commands."""
    parser.add_argument(
        "--nprocs",
        "--num-threads",
        dest="num_threads",
        type=int,
        metavar="N",
        help="threads to use (default: every CPU this process may use: its affinity mask, "
        "a cgroup quota, SLURM_CPUS_PER_TASK); the map is the same for any N",
    )


def check_report_extra(args: argparse.Namespace) -> None:
    """With ``--report``, fail before any work when the ``report`` extra is missing.

    Raises
    ------
    ImportError
        Naming the package and the extra to install.
    """
    if getattr(args, "report", False):
        from .._optional import require

        for name in ("matplotlib", "nilearn"):
            require(name, "--report (the visual report)")


def _setup_logging(args: argparse.Namespace) -> Callable[[], None]:
    """Log this package's messages to stderr; leave other libraries' loggers alone.

    Returns a function that puts the package logger back as it was, so that ``main`` can
    be called in-process (tests, notebooks) without leaving a handler behind.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger = logging.getLogger("nipype_heatmap")
    saved = (logger.handlers[:], logger.propagate, logger.level)

    def restore() -> None:
        logger.handlers[:], logger.propagate, level = saved
        logger.setLevel(level)

    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(
        logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    )
    if getattr(args, "demo", None) and not args.debug:
        # Nipype logs every node of the demo's workflows through its own handler, and
        # sets its loggers' levels from its config when imported.
        from nipype import config
        from nipype import logging as nipype_logging

        levels = {key: config.get("logging", key) for key in ("workflow_level", "interface_level")}
        for key in levels:
            config.set("logging", key, "WARNING")
        nipype_logging.update_logging(config)

        def restore_all() -> None:
            restore()
            for key, level in levels.items():
                config.set("logging", key, level)
            nipype_logging.update_logging(config)

        return restore_all
    return restore


def run_reporting_errors(prog: str, job: Callable[[], str], args: argparse.Namespace) -> int:
    """Run a command's job, print its result, and map every failure to an exit status.

    Logging goes to stderr for the job's duration (``--debug``, ``-q``). Bad data,
    unwritable outputs and missing extras give one line on stderr and status 1; anything
    unexpected too (with a request to report it); Ctrl-C gives 130. No traceback is shown
    unless ``--debug``.
    """
    debug = args.debug
    restore_logging = _setup_logging(args)
    retain_freed_memory()  # a command owns its process (see the function)
    try:
        result = job()
    except KeyboardInterrupt as err:  # during a commit of several files, it says what now
        print(f"{prog}: {str(err) or 'interrupted; no output written'}", file=sys.stderr)
        return 130
    except (ValueError, OSError, ImportError) as err:
        if debug:
            raise
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - the command line never shows a bare traceback
        if debug:
            raise
        print(
            f"{prog}: error: unexpected {type(err).__name__}: {err} "
            "(rerun with --debug for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 1
    finally:
        restore_logging()
    print(result)
    return 0
