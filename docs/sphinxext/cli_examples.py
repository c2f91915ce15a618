"""``.. command-examples:: module.NAME``: a command's examples, shown as its ``--help`` shows them.

The commands keep their examples in the parser's epilog (a module-level string); this
directive prints that string as a literal block, so the page and ``--help`` never differ.
"""

from __future__ import annotations

import importlib

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


def setup(app):
    app.add_directive("command-examples", CommandExamples)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
