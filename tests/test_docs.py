"""The documentation site builds from the repository, warning-free, and its pages show.

One build (a copy of ``docs/``, ``examples/`` and ``benchmarks/results/`` in a scratch
folder, so that nothing is generated in the work tree) serves every test here: the
command is the contributing page's, warnings are errors, every gallery example runs.
Where headless Chromium is installed, the index, the API page and two gallery pages are
rendered and their screenshots checked for content.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
GENERATED = ("_build", "generated", "auto_examples", "sg_execution_times.rst")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """Build the site as the contributing page says; return the HTML folder."""
    pytest.importorskip("sphinx", reason="the docs extra is not installed")
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed (Debian: apt-get install graphviz)")
    tree = tmp_path_factory.mktemp("docs_tree")
    shutil.copytree(ROOT / "docs", tree / "docs", ignore=shutil.ignore_patterns(*GENERATED))
    shutil.copytree(ROOT / "examples", tree / "examples")
    shutil.copytree(ROOT / "benchmarks" / "results", tree / "benchmarks" / "results")
    html = tree / "html"
    env = {**os.environ, "MPLBACKEND": "Agg", "NIPYPE_NO_ET": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "docs", str(html)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return html


def test_build_has_no_warning(site):
    # -W turns warnings into a failed build; the page set is complete.
    for page in (
        "index.html",
        "install.html",
        "semantics.html",
        "cli.html",
        "workflows.html",
        "api.html",
        "architecture.html",
        "performance.html",
        "contributing.html",
        "changelog.html",
        "user_guide/states.html",
        "user_guide/cluster.html",
        "auto_examples/index.html",
    ):
        assert (site / page).is_file(), page


def test_no_page_shows_a_markup_error(site):
    # docutils' inline error reports, and furo's red box over a "contents" directive (the
    # theme has its own table of contents), are not build warnings: look for them.
    shown = {
        str(page.relative_to(site)): text
        for page in site.rglob("*.html")
        for text in ('class="system-message"', 'class="contents')
        if text in page.read_text()
    }
    assert shown == {}


def test_every_public_name_has_an_api_page(site):
    import nipype_heatmap

    names = [name for name in nipype_heatmap.__all__ if name != "__version__"]
    missing = [n for n in names if not (site / "generated" / f"nipype_heatmap.{n}.html").is_file()]
    assert missing == []
    for module in ("api", "io", "state", "atlas", "bids", "interfaces", "workflows"):
        assert (site / "generated" / f"nipype_heatmap.{module}.html").is_file(), module
    plan = (site / "generated" / "nipype_heatmap.io.OutputPlan.html").read_text()
    assert "commit" in plan


def test_command_pages_come_from_the_parsers(site):
    import argparse

    from nipype_heatmap.cli.atlas import get_parser as atlas_parser
    from nipype_heatmap.cli.bids import get_parser as bids_parser
    from nipype_heatmap.cli.heatmap import get_parser

    page = (site / "cli.html").read_text()
    for parser in (get_parser(), bids_parser(), atlas_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue  # sphinx-argparse leaves out -h/--help
            for option in action.option_strings:
                if option.startswith("--"):
                    assert option in page, option


def test_workflow_graphs_are_drawn(site):
    page = (site / "workflows.html").read_text()
    graphs = sorted((site / "_images").glob("graphviz-*.svg"))
    assert len(graphs) >= 5
    assert all(g.name in page for g in graphs[:5])
    assert any("merge_heatmaps" in g.read_text() for g in graphs)


def test_performance_page_is_rendered_from_the_results_files(site):
    page = (site / "performance.html").read_text()
    results = ROOT / "benchmarks" / "results"
    names = sorted(p.stem for p in results.glob("*.json") if p.stem != "schema")
    assert names and not any(name.endswith("-quick") for name in names)
    for name in names:
        assert f"benchmarks/results/{name}.json" in page, name
    heatmap = json.loads((results / "heatmap.json").read_text())
    masks = heatmap["data_sets"]["masks"]["contestants"]
    assert "nidataset" in page and "mrmath" in page and "nilearn" in page
    # the ratio column is computed at build time from the medians in the file
    cli = masks["nipype-heatmap (CLI)"]["median_s"]
    nidataset = masks["nidataset generate_heatmap_volume"]["median_s"]
    assert f"{nidataset / cli:.2f}" in page
    assert "MISSED" in page or "holds" in page  # the targets' verdicts


def test_a_results_file_the_page_cannot_show_is_refused_naming_it(tmp_path):
    pytest.importorskip("sphinx", reason="the docs extra is not installed")
    sys.path.insert(0, str(ROOT / "docs" / "sphinxext"))
    try:
        from benchmark_table import load_results
    finally:
        sys.path.pop(0)
    from sphinx.errors import ExtensionError

    good = {
        "benchmark": "cohort",
        "quick": False,
        "machine": {"date": "d", "cpu": "c", "cores": 2, "memory_gib": 1, "python": "3",
                    "nipype_heatmap": "0.1.0"},
    }  # fmt: skip
    path = tmp_path / "cohort.json"
    path.write_text(json.dumps(good))
    assert load_results(path)["benchmark"] == "cohort"
    for broken, says in (
        ({**good, "quick": True}, "--quick run"),
        ({**good, "benchmark": "nope"}, "'benchmark' must be one of"),
        ({**good, "machine": {"cpu": "c"}}, "'machine' lacks 'date'"),
        ({**good, "targets": [{"target": "t"}]}, "needs 'holds'"),
    ):
        path.write_text(json.dumps(broken))
        with pytest.raises(ExtensionError, match=says) as err:
            load_results(path)
        assert str(path) in str(err.value)
    path.write_text("{")
    with pytest.raises(ExtensionError, match="not a readable JSON file"):
        load_results(path)


@pytest.mark.parametrize(
    "example",
    [
        "plot_lesion_overlap",
        "plot_tissue_probability",
        "plot_cohort_maps",
        "plot_saved_state",
        "plot_atlas",
        "plot_bids_derivatives",
        "plot_map_reduce",
    ],
)
def test_every_example_ran_and_drew_its_figure(site, example):
    import matplotlib.image

    page = (site / "auto_examples" / f"{example}.html").read_text()
    figure = site / "_images" / f"sphx_glr_{example}_001.png"
    assert figure.name in page
    pixels = matplotlib.image.imread(figure)
    assert pixels.std() > 0.05  # a drawn figure, not a blank canvas


def _screenshot(page: Path, out: Path) -> None:
    profile = out.with_suffix(".profile")
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--window-size=1300,1800",
            f"--screenshot={out}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )


@pytest.mark.parametrize(
    "page",
    [
        "index.html",
        "api.html",
        "auto_examples/plot_lesion_overlap.html",
        "auto_examples/plot_atlas.html",
    ],
)
def test_pages_show_in_a_browser(site, page, tmp_path):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no headless Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    import matplotlib.image
    import numpy as np

    out = tmp_path / "page.png"
    _screenshot(site / page, out)
    pixels = matplotlib.image.imread(out)[..., :3]
    assert pixels.shape[:2] == (1800, 1300)
    ink = np.any(pixels < 0.85, axis=-1)  # text, code, figures: darker than any background
    # The page's main column (right of the sidebar) has something on many of its rows; a
    # blank page or the browser's error page has almost nothing (measured: 4 % of rows).
    rows = ink[:, 380:1150].any(axis=1).mean()
    assert rows > 0.15, f"{page}: the screenshot is nearly blank ({rows:.0%} of rows)"
    assert ink.mean() > 0.01, f"{page}: the screenshot is nearly blank ({ink.mean():.1%} ink)"
