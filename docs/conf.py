"""Sphinx configuration of the nipype_heatmap site.

Build (warnings are errors, nothing is fetched from the network)::

    .venv/bin/python -m sphinx -W --keep-going -b html docs docs/_build/html

The API stubs (``docs/api/generated/``) and the gallery (``docs/auto_examples/``) are
generated at build time and never committed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "sphinxext"))  # the local directives (not the package)

# Examples and workflow graphs run headless and never open a window; Nipype must not ask
# the network for its latest version (it does at import time unless told not to).
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("NIPYPE_NO_ET", "1")

import nipype_heatmap  # noqa: E402

project = "nipype_heatmap"
author = "The nipype_heatmap developers"
copyright = "The nipype_heatmap developers"  # noqa: A001
release = nipype_heatmap.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.graphviz",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinxarg.ext",
    "sphinx_gallery.gen_gallery",
    "myst_parser",
    "workflow_graph",
    "benchmark_table",
    "interface_traits",
    "cli_examples",
]

# "--sum" stays two hyphens, quotes stay straight: the pages are full of commands.
smartquotes = False
highlight_language = "text"  # blocks without a language (the commands' usage) stay plain

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py", "**.codeobj.json"]
# Sphinx-gallery writes its timing page into the source folder; it is in the toctree of
# the contributing page's neighbour, not needed as a page of its own.
exclude_patterns += ["sg_execution_times.rst"]

# -- no network ----------------------------------------------------------------------------
# No intersphinx: a build must not fetch inventories. Cross-references to other projects
# are plain links in the text.

# -- API reference ---------------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autosummary_ignore_module_all = False  # a subpackage's public API is its __all__
autodoc_default_options = {"members": True, "inherited-members": False, "show-inheritance": False}
autodoc_typehints = "none"  # the numpydoc Parameters sections say the types
autodoc_member_order = "bysource"
autodoc_mock_imports: list[str] = []
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks: set[str] = set()

# -- workflow graphs -------------------------------------------------------------------------
graphviz_output_format = "svg"
graphviz_dot_args = ["-Gfontname=Helvetica", "-Nfontname=Helvetica", "-Efontname=Helvetica"]

# -- Markdown pages --------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# -- the examples gallery --------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(HERE.parent / "examples"),
    "gallery_dirs": str(HERE / "auto_examples"),
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "plot_gallery": "True",
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "default_thumb_file": None,
    "reset_modules": ("matplotlib",),
    "write_computation_times": True,
}

# -- HTML ------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"nipype_heatmap {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_show_sourcelink = False
html_theme_options = {"navigation_with_keys": True}
