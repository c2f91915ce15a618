"""``.. workflow-graph::``: draw an ``init_*_wf`` builder's Nipype graph, as sMRIPrep does.

The directive builds the workflow at documentation build time with the arguments given
and draws Nipype's hierarchical, coloured graph (the ``graph2use="colored"`` graph of
``Workflow.write_graph``) through :mod:`sphinx.ext.graphviz`, so the picture always shows
the code as it is. Graphviz's ``dot`` must be installed (Debian: ``apt-get install
graphviz``)::

    .. workflow-graph:: nipype_heatmap.workflows.init_scaled_heatmap_wf
       :kwargs: chunk_size=100, cohort={"coverage": True}
       :caption: Map-reduce over chunks of 100 files.

``:kwargs:`` is a Python argument list, passed to the builder: literals, and the option
objects built from literals (``options=MapOptions(use_mean=False)``,
``cohort=CohortOptions(coverage=True)``), which the builders that take them require.
"""

from __future__ import annotations

import ast
import importlib
import os
import tempfile
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.errors import ExtensionError
from sphinx.ext.graphviz import figure_wrapper, graphviz
from sphinx.util.docutils import SphinxDirective


def _value(node: ast.expr):
    """A literal, or ``MapOptions(...)``/``CohortOptions(...)`` of literal keywords."""
    from nipype_heatmap import options

    if isinstance(node, ast.Call):
        name = getattr(node.func, "id", None)
        if name not in ("MapOptions", "CohortOptions") or node.args:
            raise ValueError(
                f"{ast.unparse(node)}: only literals, MapOptions(...) and CohortOptions(...) "
                "with keyword arguments"
            )
        return getattr(options, name)(
            **{kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
        )
    return ast.literal_eval(node)


def _parse_kwargs(text: str) -> dict:
    """``a=1, b={"x": True}`` -> ``{"a": 1, "b": {"x": True}}``; option objects too."""
    call = ast.parse(f"f({text})", mode="eval").body
    if not isinstance(call, ast.Call) or call.args:
        raise ValueError(f"expected keyword arguments, got {text!r}")
    return {kw.arg: _value(kw.value) for kw in call.keywords}


def workflow_dot(builder: str, kwargs: dict) -> str:
    """Build ``builder(**kwargs)`` and return the dot source of its coloured graph."""
    module_name, _, func_name = builder.rpartition(".")
    func = getattr(importlib.import_module(module_name), func_name)
    workflow = func(**kwargs)
    with tempfile.TemporaryDirectory() as tmp:
        dotfile = os.path.join(tmp, "graph.dot")
        workflow.write_hierarchical_dotfile(dotfilename=dotfile, colored=True, simple_form=True)
        return Path(dotfile).read_text()


class WorkflowGraph(SphinxDirective):
    """Render the graph of a workflow built by an ``init_*_wf`` function."""

    required_arguments = 1
    optional_arguments = 0
    has_content = False
    option_spec = {
        "kwargs": directives.unchanged,
        "caption": directives.unchanged,
        "alt": directives.unchanged,
    }

    def run(self) -> list[nodes.Node]:
        builder = self.arguments[0]
        try:
            kwargs = _parse_kwargs(self.options.get("kwargs", ""))
            dot = workflow_dot(builder, kwargs)
        except Exception as err:  # a build error that names the directive's builder
            raise ExtensionError(f"workflow-graph {builder}: {err}") from err
        node = graphviz()
        node["code"] = dot
        node["options"] = {"docname": self.env.docname}
        node["alt"] = self.options.get("alt", f"Nipype graph of {builder}")
        node["align"] = "center"
        if "caption" in self.options:
            figure = figure_wrapper(self, node, self.options["caption"])
            self.add_name(figure)
            return [figure]
        self.add_name(node)
        return [node]


def setup(app):
    app.setup_extension("sphinx.ext.graphviz")
    app.add_directive("workflow-graph", WorkflowGraph)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
