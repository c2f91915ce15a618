"""The command pages: the parsers' text as ``--help`` shows it.

- ``.. command-examples:: module.NAME``: the commands keep their examples in the parser's
  epilog (a module-level string); this directive prints that string as a literal block, so
  the page and ``--help`` never differ.
- ``heatmap_parser``, ``bids_parser``, ``atlas_parser``: the commands' own parsers with
  their help texts escaped for reStructuredText, which sphinx-argparse parses them as
  (``*.nii`` would start emphasis, ``name_`` a link). Use them as
  ``:module: cli_examples`` / ``:func: heatmap_parser``.
"""

from __future__ import annotations

import argparse
import importlib
import re

from docutils import nodes
from sphinx.util.docutils import SphinxDirective


class CommandExamples(SphinxDirective):
    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        module_name, _, attr = self.arguments[0].rpartition(".")
        text = getattr(importlib.import_module(module_name), attr)
        block = nodes.literal_block(text, text)
        block["language"] = "text"
        return [block]


_SPECIAL = re.compile(r"([\\*`|_])")


def _escaped(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    for action in parser._actions:
        if action.help and action.help != argparse.SUPPRESS:
            action.help = _SPECIAL.sub(r"\\\1", action.help)
    for group in parser._action_groups:
        if group.description:
            group.description = _SPECIAL.sub(r"\\\1", group.description)
    if parser.description:
        parser.description = _SPECIAL.sub(r"\\\1", parser.description)
    return parser


def heatmap_parser() -> argparse.ArgumentParser:
    from nipype_heatmap.cli.heatmap import get_parser

    return _escaped(get_parser())


def bids_parser() -> argparse.ArgumentParser:
    from nipype_heatmap.cli.bids import get_parser

    return _escaped(get_parser())


def atlas_parser() -> argparse.ArgumentParser:
    from nipype_heatmap.cli.atlas import get_parser

    return _escaped(get_parser())


def setup(app):
    app.add_directive("command-examples", CommandExamples)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
