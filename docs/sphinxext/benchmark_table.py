"""``.. benchmark-results::``: the performance tables, rendered from benchmark JSON files.

Figures on the site come from the files the benchmarks write, never from prose::

    .. benchmark-results:: ../benchmarks/results

renders every ``*.json`` file of that folder (relative to the page; ``schema.json`` aside),
newest date first: the date, the machine, the command that produced it, and one table per
data set with each contestant's median time, its ratio to the baseline contestant, its
peak memory and whether its output matched. A file with ``"example": true`` is shown
under a warning that its numbers are an example, not a measurement.

The format is ``benchmarks/results/schema.json`` (JSON Schema); the checks here are the
ones a page needs, each error naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path

from docutils import nodes
from sphinx.errors import ExtensionError
from sphinx.util.docutils import SphinxDirective

FORMAT = "nipype_heatmap.benchmark"
VERSION = 1


def load_results(path: Path) -> dict:
    """Read one results file and check what the page uses; errors name the file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ExtensionError(f"{path}: not a readable JSON file ({err})") from err

    def need(condition: bool, what: str) -> None:
        if not condition:
            raise ExtensionError(f"{path}: {what} (see benchmarks/results/schema.json)")

    need(isinstance(data, dict), "expected a JSON object")
    need(data.get("format") == FORMAT, f"'format' must be {FORMAT!r}")
    need(data.get("version") == VERSION, f"'version' must be {VERSION}")
    for key in ("date", "command", "baseline"):
        need(isinstance(data.get(key), str) and data[key], f"'{key}' must be a non-empty string")
    machine = data.get("machine")
    need(isinstance(machine, dict), "'machine' must be an object")
    for key in ("description", "cores", "memory_gib", "python"):
        need(key in machine, f"'machine' lacks '{key}'")
    need(isinstance(data.get("datasets"), list) and data["datasets"], "'datasets' is empty")
    for dataset in data["datasets"]:
        need(isinstance(dataset.get("name"), str), "every data set needs a 'name'")
        rows = dataset.get("results")
        need(isinstance(rows, list) and rows, f"data set {dataset.get('name')!r}: no results")
        names = [row.get("contestant") for row in rows]
        need(
            data["baseline"] in names,
            f"data set {dataset['name']!r} has no result of the baseline {data['baseline']!r}",
        )
        for row in rows:
            median = row.get("median_s")
            need(
                median is None or (isinstance(median, int | float) and median > 0),
                f"{row.get('contestant')!r}: 'median_s' must be a positive number or null",
            )
    return data


def _para(*parts: nodes.Node | str) -> nodes.paragraph:
    para = nodes.paragraph()
    for part in parts:
        para += nodes.Text(part) if isinstance(part, str) else part
    return para


def _table(header: list[str], rows: list[list[str]], widths: list[int]) -> nodes.table:
    table = nodes.table(classes=["benchmark-table"])
    group = nodes.tgroup(cols=len(header))
    table += group
    for width in widths:
        group += nodes.colspec(colwidth=width)
    for section, lines in ((nodes.thead(), [header]), (nodes.tbody(), rows)):
        for line in lines:
            row = nodes.row()
            for text in line:
                row += nodes.entry("", _para(text))
            section += row
        group += section
    return table


def _rows(data: dict, dataset: dict) -> list[list[str]]:
    baseline = next(r for r in dataset["results"] if r["contestant"] == data["baseline"])
    rows = []
    for row in dataset["results"]:
        median = row.get("median_s")
        ratio = (
            f"{median / baseline['median_s']:.2f}x"
            if median is not None and baseline.get("median_s")
            else "-"
        )
        rss = row.get("peak_rss_mib")
        name = row["contestant"] + (f" ({row['version']})" if row.get("version") else "")
        rows.append(
            [
                name + (f" [{row['note']}]" if row.get("note") else ""),
                f"{median:.3f}" if median is not None else "not run",
                ratio,
                f"{rss:.0f}" if rss is not None else "-",
                {True: "yes", False: "no"}.get(row.get("same_output"), "-"),
            ]
        )
    return rows


def results_nodes(data: dict, source: str) -> list[nodes.Node]:
    """The docutils nodes of one results file (built directly, so that the directive
    renders the same in reStructuredText and Markdown pages)."""
    machine = data["machine"]
    out: list[nodes.Node] = []
    if data.get("example"):
        out.append(
            nodes.warning(
                "",
                _para(
                    nodes.literal(text=source),
                    " is an ",
                    nodes.strong(text="example"),
                    " of the results format, not a measurement: its numbers only show how "
                    "a results file is rendered.",
                ),
            )
        )
    where = (
        f", {machine['description']}: {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"Python {machine['python']}" + (f", {machine['os']}" if machine.get("os") else "") + "."
    )
    out.append(_para(nodes.strong(text=data["date"]), where))
    out.append(
        _para(
            "Command: ",
            nodes.literal(text=data["command"]),
            " (",
            nodes.literal(text=source),
            ").",
        )
    )
    if data.get("software"):
        versions = ", ".join(f"{k} {v}" for k, v in sorted(data["software"].items()))
        out.append(_para(f"Versions: {versions}."))
    header = [
        "contestant",
        "median (s)",
        f"time / {data['baseline']}",
        "peak RSS (MiB)",
        "same map",
    ]
    for dataset in data["datasets"]:
        details = [
            dataset.get("description", ""),
            f"{dataset['files']} files" if dataset.get("files") else "",
            " x ".join(map(str, dataset["shape"])) if dataset.get("shape") else "",
            f"median of {dataset['repeats']} runs" if dataset.get("repeats") else "",
        ]
        out.append(nodes.rubric(text=dataset["name"]))
        out.append(_para("; ".join(d for d in details if d) + "."))
        out.append(_table(header, _rows(data, dataset), [40, 15, 20, 15, 10]))
    return out


class BenchmarkResults(SphinxDirective):
    """Render every results file of a folder, newest first."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        _, folder = self.env.relfn2path(self.arguments[0], self.env.docname)
        files = sorted(p for p in Path(folder).glob("*.json") if p.name != "schema.json")
        if not files:
            raise ExtensionError(f"benchmark-results: no results file in {folder}")
        loaded = []
        for path in files:
            self.env.note_dependency(str(path))
            loaded.append((load_results(path), path))
        loaded.sort(key=lambda item: item[0]["date"], reverse=True)
        container = nodes.container(classes=["benchmark-results"])
        for data, path in loaded:
            container += results_nodes(data, f"benchmarks/results/{path.name}")
        return [container]


def setup(app):
    app.add_directive("benchmark-results", BenchmarkResults)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
