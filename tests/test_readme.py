"""The README's quick start and CI stay one and the same."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_quick_start_is_exactly_two_commands():
    commands = _quick_start_commands()
    assert len(commands) == 2
    assert all("\n" not in c for c in commands)
    assert "--demo" in commands[0] and "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _quick_start_commands()[1] in ci.splitlines()


def test_every_cli_flag_in_the_readme_exists():
    import runpy

    from nipype_heatmap.cli.atlas import get_parser as get_atlas_parser
    from nipype_heatmap.cli.bids import get_parser as get_bids_parser
    from nipype_heatmap.cli.heatmap import get_parser

    mutate_parser = runpy.run_path(str(ROOT / "tools" / "mutate.py"))["get_parser"]
    bench_parser = runpy.run_path(str(ROOT / "benchmarks" / "bench_heatmap.py"))["get_parser"]
    parsers = (
        get_parser(),
        get_bids_parser(),
        get_atlas_parser(),
        mutate_parser(),
        bench_parser(),
    )
    known = {
        option
        for parser in parsers
        for action in parser._actions
        for option in action.option_strings
    }
    readme = (ROOT / "README.md").read_text()
    commands = readme.replace("\\\n", " ")  # a command continued on the next line: one line
    lines = [line for line in commands.splitlines() if "nipype-heatmap" in line or "`--" in line]
    used = set(re.findall(r"(?<![\w-])(--?[a-z][a-z_-]*)", " ".join(lines)))
    pip_and_pytest = {"-e", "-m"}
    assert used - known - pip_and_pytest == set()
    assert "--anat" not in readme  # removed with the deprecated aliases (0.x)
