"""Mutation testing: change one thing in the code, run the fast tests, see if they notice.

Usage::

    python tools/mutate.py nipype_heatmap/io/plan.py [more modules] [--jobs 2] [--limit N]
                           [--tests "tests/test_io_plan.py tests/test_io_writing.py"]
                           [--mutants 3,17,42] [--skip-judged] [--timeout S]

For each module, the fast tests first run once as the module is (they must pass; their
time sets the limit, 4x, past which a mutant's run counts as killed: an endless loop).
Then every single-point mutation below is applied in turn to a scratch copy of the
repository (the working tree is never touched), and the module's fast tests run against it
(``pytest -x``, the first failure is enough). Each mutant's outcome is printed on stderr
as it ends. A mutant the tests do not notice *survives*: either a gap in the tests, or an
equivalent change that cannot alter behaviour. Survivors judged equivalent are listed, with
the reason, in ``tools/mutation_equivalents.txt``; the report gives the share of the
non-equivalent mutants that were killed and lists every survivor, judged or not.
``--mutants`` re-runs chosen ones (the numbers hold while the module is unchanged);
``--skip-judged`` does not run those already judged equivalent.

Mutations (a small, classic set): comparison operators flipped to their neighbours
(``<`` / ``<=``, ``==`` / ``!=``, ``in`` / ``not in``, ``is`` / ``is not``); arithmetic
``+`` / ``-``, ``*`` / ``/``, ``//`` / ``/``; ``and`` / ``or``; ``True`` / ``False``; integer
constants ``n`` to ``n + 1``; an ``if`` condition negated; a bare call statement removed
(``pass``). Calls that only log are left alone: a missing log line is not behaviour the
fast tests should pin.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Survivors read and judged equivalent: they cannot change any result (see the file).
EQUIVALENTS = Path(__file__).resolve().parent / "mutation_equivalents.txt"

#: The fast tests that guard each module (no workflow runs, no cluster, no wheel build).
DEFAULT_TESTS = {
    "nipype_heatmap/io/reading.py": "tests/test_io_reading.py tests/test_core.py",
    "nipype_heatmap/io/inflating.py": "tests/test_io_reading.py",
    "nipype_heatmap/io/writing.py": "tests/test_io_writing.py tests/test_io_plan.py",
    "nipype_heatmap/io/plan.py": "tests/test_io_plan.py tests/test_io_writing.py "
    "tests/test_io_discovery.py",
    "nipype_heatmap/io/locking.py": "tests/test_io_plan.py",
    "nipype_heatmap/io/statefile.py": "tests/test_state.py tests/test_update.py",
    "nipype_heatmap/io/discovery.py": "tests/test_io_discovery.py tests/test_core.py",
    "nipype_heatmap/io/grid.py": "tests/test_io_grid.py tests/test_state.py",
    "nipype_heatmap/accumulate/sum.py": "tests/test_core.py tests/test_cohort.py "
    "tests/test_update.py tests/test_parallel.py",
    "nipype_heatmap/accumulate/spread.py": "tests/test_cohort.py tests/test_update.py",
    "nipype_heatmap/accumulate/values.py": "tests/test_core.py tests/test_io_reading.py "
    "tests/test_update.py",
    "nipype_heatmap/accumulate/_kernels.py": "tests/test_core.py tests/test_cohort.py",
    "nipype_heatmap/accumulate/labels.py": "tests/test_atlas.py",
    "nipype_heatmap/options.py": "tests/test_cohort.py tests/test_core.py "
    "nipype_heatmap/options.py",
    "nipype_heatmap/maps.py": "tests/test_cohort.py",
    "nipype_heatmap/state.py": "tests/test_state.py tests/test_update.py",
    "nipype_heatmap/api/inputs.py": "tests/test_core.py tests/test_io_discovery.py "
    "tests/test_parallel.py tests/test_cohort.py",
    "nipype_heatmap/api/outputs.py": "tests/test_cohort.py tests/test_io_discovery.py "
    "tests/test_cli.py",
    "nipype_heatmap/api/heatmaps.py": "tests/test_core.py tests/test_cohort.py tests/test_cli.py",
    "nipype_heatmap/api/states.py": "tests/test_update.py tests/test_state.py",
    "nipype_heatmap/atlas/build.py": "tests/test_atlas.py",
    "nipype_heatmap/atlas/sparse.py": "tests/test_atlas.py",
    "nipype_heatmap/atlas/tables.py": "tests/test_atlas.py",
    "nipype_heatmap/cli/heatmap.py": "tests/test_cli.py tests/test_cohort.py tests/test_update.py",
    "nipype_heatmap/cli/_base.py": "tests/test_cli.py tests/test_parallel.py",
    "nipype_heatmap/_runtime.py": "tests/test_parallel.py",
    "nipype_heatmap/report/display.py": "tests/test_report.py",
    "nipype_heatmap/report/figures.py": "tests/test_report.py",
    "nipype_heatmap/report/pages.py": "tests/test_report.py",
    "nipype_heatmap/report/atlas.py": "tests/test_report.py",
}


_SWAPS = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div,
    ast.And: ast.Or,
    ast.Or: ast.And,
}


@dataclass
class Mutant:
    """One single-point change: where, and what."""

    index: int
    line: int
    description: str
    column: str = "0"  # the node's column; ".i" for the i-th (i > 0) operator of a chain


def _is_log_call(node: ast.AST) -> bool:
    call = node.value if isinstance(node, ast.Expr) else node
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Attribute):
        return False
    owner = call.func.value
    return isinstance(owner, ast.Name) and owner.id in ("LOGGER", "IFLOGGER", "logger")


def _in_docstring_or_log(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    current = node
    while current in parents:
        current = parents[current]
        if isinstance(current, ast.Expr) and _is_log_call(current):
            return True
    return False


def _sites(tree: ast.AST) -> list[tuple[ast.AST, str, str]]:
    """Every mutation site: (node, kind, description)."""
    parents = {
        child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)
    }
    sites = []
    for node in ast.walk(tree):
        if _in_docstring_or_log(node, parents):
            continue
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in _SWAPS:
                    new = _SWAPS[type(op)].__name__
                    sites.append((node, f"cmp:{i}", f"{type(op).__name__} -> {new}"))
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _SWAPS:
            sites.append(
                (node, "op", f"{type(node.op).__name__} -> {_SWAPS[type(node.op)].__name__}")
            )
        elif isinstance(node, ast.BoolOp):
            sites.append(
                (node, "op", f"{type(node.op).__name__} -> {_SWAPS[type(node.op)].__name__}")
            )
        elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
            sites.append((node, "bool", f"{node.value} -> {not node.value}"))
        elif (
            isinstance(node, ast.Constant)
            and type(node.value) is int
            and not isinstance(parents.get(node), ast.Subscript)
        ):
            sites.append((node, "int", f"{node.value} -> {node.value + 1}"))
        elif isinstance(node, ast.If):
            sites.append((node, "if", "condition negated"))
        elif (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Call)
            and not _is_log_call(node)
        ):
            sites.append((node, "drop", "call statement removed"))
    return sites


def mutate(source: str, index: int) -> tuple[str, Mutant]:
    """Apply the ``index``-th mutation of ``source``; return the new source and its record."""
    tree = ast.parse(source)
    node, kind, description = _sites(tree)[index]
    if kind.startswith("cmp:"):
        i = int(kind.split(":")[1])
        node.ops[i] = _SWAPS[type(node.ops[i])]()
    elif kind == "op":
        node.op = _SWAPS[type(node.op)]()
    elif kind == "bool":
        node.value = not node.value
    elif kind == "int":
        node.value = node.value + 1
    elif kind == "if":
        node.test = ast.UnaryOp(op=ast.Not(), operand=node.test)
    elif kind == "drop":
        node.value = ast.Constant(value=None)
    column = str(getattr(node, "col_offset", 0))
    if kind.startswith("cmp:") and kind != "cmp:0":  # a <= b <= c: which operator
        column += "." + kind.split(":")[1]
    return ast.unparse(tree), Mutant(index, getattr(node, "lineno", 0), description, column)


def count_sites(source: str) -> int:
    return len(_sites(ast.parse(source)))


def run_mutant(module: str, index: int | None, tests: str, timeout: float) -> tuple[Mutant, str]:
    """Run the tests against one mutant in its own scratch copy; 'killed' or 'survived'.

    ``index`` None runs them against the module as it is (the baseline, which must pass).
    """
    source = (ROOT / module).read_text()
    if index is None:
        mutated, mutant = source, Mutant(-1, 0, "none (baseline)")
    else:
        mutated, mutant = mutate(source, index)
    with tempfile.TemporaryDirectory(prefix="mutant-") as tmp:
        copy = Path(tmp) / "repo"
        shutil.copytree(
            ROOT,
            copy,
            ignore=shutil.ignore_patterns(".git", ".venv*", "build", "*.egg-info", "__pycache__"),
        )
        (copy / module).write_text(mutated)
        try:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-x",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "-m",
                    "not slow and not slurm",
                    *tests.split(),
                ],
                cwd=copy,
                env={**_env(), "PYTHONPATH": str(copy)},
                capture_output=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return mutant, "killed (timeout)"
    return mutant, "survived" if done.returncode == 0 else "killed"


def load_equivalents(path: Path = EQUIVALENTS) -> dict[tuple[str, str, str], str]:
    """The equivalent mutants, ``(module, change, source line) -> why``.

    One per line: ``module | change | the mutated line, stripped | why it cannot change a
    result``; the change as the report prints it, with ``@col N`` where one line has
    several of the same kind. Keyed by the line's text, not its number, so that edits
    elsewhere in the module do not detach a judgement from its line; a line that is edited
    loses it.
    """
    equivalents = {}
    if not path.exists():
        return equivalents
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = [part.strip() for part in line.split(" | ")]
        # The mutated line may hold " | " itself (flags or-ed together); the reason not.
        parts = [*parts[:2], " | ".join(parts[2:-1]), parts[-1]]
        if len(parts) != 4 or not all(parts):
            raise SystemExit(f"{path}:{number}: want 'module | change | line | why': {line!r}")
        equivalents[tuple(parts[:3])] = parts[3]
    return equivalents


def _judgement(equivalents, module: str, mutant: Mutant, lines: list[str]) -> str | None:
    """Why ``mutant`` is equivalent, if judged: by its change at its column on its line
    (``"1 -> 2 @col 41"``, for a line with several such changes), else by its change."""
    text = lines[mutant.line - 1].strip()
    at_column = f"{mutant.description} @col {mutant.column}"
    return equivalents.get((module, at_column, text)) or equivalents.get(
        (module, mutant.description, text)
    )


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def get_parser() -> argparse.ArgumentParser:
    """The command line (also read by the README test: every option it shows exists)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="+", help="modules to mutate, relative to the root")
    parser.add_argument("--tests", help="test files to run (default: the module's fast tests)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--limit", type=int, help="only the first N mutants of each module")
    parser.add_argument(
        "--timeout",
        type=float,
        help="seconds before a mutant's run counts as killed (default: 4 x the baseline run, "
        "at least 60)",
    )
    parser.add_argument(
        "--mutants",
        help="only these mutant numbers, comma-separated (e.g. the survivors of a last run)",
    )
    parser.add_argument(
        "--skip-judged",
        action="store_true",
        help="do not run the mutants already judged equivalent (reported as equivalent)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    total = killed = equivalent = 0
    equivalents = load_equivalents()
    for module in args.modules:
        tests = args.tests or DEFAULT_TESTS.get(module, "tests")
        source = (ROOT / module).read_text()
        lines = source.splitlines()
        n = count_sites(source)
        indices = range(min(n, args.limit) if args.limit else n)
        if args.mutants:
            indices = [int(i) for i in args.mutants.split(",") if int(i) < n]
        # The tests must pass on the module as it is, or every mutant would count as
        # killed; their time sets the limit past which a mutant (an endless loop, a
        # deadlock) counts as killed.
        started = time.monotonic()
        _, baseline = run_mutant(module, None, tests, args.timeout or 3600)
        if baseline != "survived":
            print(f"{module}: the tests fail without any mutation ({tests}); fix them first")
            return 1
        timeout = args.timeout or max(60.0, 4 * (time.monotonic() - started))
        results = []
        if args.skip_judged:  # judged equivalent before: reported so, not run again
            judged_before = [
                m
                for m in (mutate(source, i)[1] for i in indices)
                if _judgement(equivalents, module, m, lines)
            ]
            results = [(m, "survived") for m in judged_before]
            indices = sorted(set(indices) - {m.index for m in judged_before})
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(run_mutant, module, i, tests, timeout) for i in indices]
            for future in futures:
                mutant, result = future.result()
                results.append((mutant, result))
                # One line per mutant as it ends, so that a long run can be watched (and an
                # interrupted one still tells what it found).
                print(
                    f"{module}:{mutant.line} mutant {mutant.index} {result}: "
                    f"{mutant.description} | {lines[mutant.line - 1].strip()[:70]}",
                    file=sys.stderr,
                    flush=True,
                )
        survivors = [m for m, r in results if r == "survived"]
        judged = {m.index: _judgement(equivalents, module, m, lines) for m in survivors}
        n_equivalent = sum(why is not None for why in judged.values())
        total += len(results)
        killed += len(results) - len(survivors)
        equivalent += n_equivalent
        score = 100 * (len(results) - len(survivors)) / max(len(results) - n_equivalent, 1)
        print(
            f"\n## {module}: {len(results)} mutants, {len(results) - len(survivors)} killed, "
            f"{n_equivalent} equivalent, {len(survivors) - n_equivalent} not killed "
            f"({score:.0f}% of the non-equivalent killed)"
        )
        for mutant in sorted(survivors, key=lambda m: (judged[m.index] is not None, m.line)):
            why = judged[mutant.index]
            print(
                f"- line {mutant.line}: {mutant.description} @col {mutant.column} "
                f"(mutant {mutant.index}): "
                + (f"equivalent: {why}" if why else "NOT KILLED")
                + f" | {lines[mutant.line - 1].strip()}"
            )
    score = 100 * killed / max(total - equivalent, 1)
    print(
        f"\nall: {total} mutants, {killed} killed, {equivalent} equivalent "
        f"({score:.0f}% of the non-equivalent killed)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
