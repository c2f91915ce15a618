"""What a new user gets from a wheel: every import the README shows, the demo, the fast path."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CHECK_IMPORTS = """
import importlib.util, nipype_heatmap
from nipype_heatmap import HeatmapVolume, generate_heatmap_volume, write_heatmap
from nipype_heatmap.interfaces import MergeHeatmaps, HeatmapState, HeatmapDerivativesSink
from nipype_heatmap.interfaces import LabelAtlas, PartialLabelAtlas
from nipype_heatmap.atlas import load_atlas, build_atlas, accumulate_labels, write_atlas
from nipype_heatmap.workflows import (
    init_bids_heatmap_wf, init_lesion_overlap_wf, init_scaled_heatmap_wf,
    init_tissue_probability_wf, init_scaled_atlas_wf,
)
from nipype_heatmap.io import inflating
inflating._member_inflater()  # libdeflate's C API, from the installed deflate wheel
assert importlib.util.find_spec("workflows") is None, "a top-level 'workflows' got installed"
assert "site-packages" in nipype_heatmap.__file__, nipype_heatmap.__file__
print("imports ok")
"""


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_the_demo_and_every_readme_import(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is needed to copy the source tree without build leftovers")
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("nipype_heatmap-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"{wheel}[demo]"],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    # Run from an empty folder, so nothing of the clone can be imported by accident.
    work = tmp_path / "elsewhere"
    work.mkdir()
    imports = subprocess.run(
        [str(python), "-c", CHECK_IMPORTS], capture_output=True, text=True, cwd=work
    )
    assert "imports ok" in imports.stdout, imports.stderr
    demo = subprocess.run(
        [str(env_dir / "bin" / "nipype-heatmap"), "--demo", "demo"],
        capture_output=True,
        text=True,
        cwd=work,
    )
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert "Pearson r" in demo.stdout and "Tissue atlas vs MNI152 templates" in demo.stdout
    for command in ("nipype-heatmap-atlas", "nipype-heatmap-bids"):
        shown = subprocess.run(
            [str(env_dir / "bin" / command), "--help"], capture_output=True, text=True, cwd=work
        )
        assert shown.returncode == 0 and "usage:" in shown.stdout, shown.stderr
    assert not list(work.glob("crash-*")), "crash files landed in the working folder"
