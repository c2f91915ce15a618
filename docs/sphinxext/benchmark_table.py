"""``.. benchmark-results::``: the performance tables, rendered from the benchmarks' files.

Figures on the site come from the files the benchmarks write, never from prose::

    .. benchmark-results:: ../benchmarks/results

renders every ``<name>.json`` of that folder (relative to the page; ``schema.json`` and the
``*-quick.json`` files of script checks aside), in the order of :data:`TITLES`: when and
where it ran, its settings, then every table the file holds:

- a set of **contestants** (``{label: {"median_s": ..., "peak_rss_mib": ...}}``): median
  time, the time over the first contestant's, peak memory;
- a set of **comparisons** (``{label: {"identical": ..., ...}}``): bit for bit, or how far
  apart;
- a set of records of plain values (gains, verdicts): one row each;
- any other object of plain values (ratios, sizes): a two-column table;
- ``targets`` and ``checks``: each with its verdict.

Commands, raw times and paths are in the files, not on the page. The format is
``benchmarks/results/schema.json``; the checks here are the ones the page needs, each
error naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path

from docutils import nodes
from sphinx.errors import ExtensionError
from sphinx.util.docutils import SphinxDirective

#: The benchmarks the page knows, in the order it shows them, with their headings.
TITLES = {
    "heatmap": "One heatmap: the command against the others (bench_heatmap.py)",
    "cohort": "Cohort maps over the plain mean (bench_cohort.py)",
    "update": "Updating a saved state against recomputing (bench_update.py)",
    "tricks": "Each kept speed trick, with and without (bench_tricks.py)",
    "compare": "Every map against the previous version's (compare_versions.py)",
    "atlas": "Probabilistic atlases (bench_atlas.py)",
    "scaleout": "One node against map-reduce under MultiProc (bench_scaleout.py)",
    "bids_index": "Selecting maps in a large BIDS dataset (bench_bids_index.py)",
}
#: Keys whose values are for the record (commands, raw times, temporary paths).
_NOT_SHOWN = {"command", "times_s", "folder", "a", "b", "python", "benchmark", "quick"}
_VERDICTS = {True: "holds", False: "MISSED", None: "not measured"}


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
    need(
        data.get("benchmark") in TITLES,
        f"'benchmark' must be one of {', '.join(TITLES)}, not {data.get('benchmark')!r}",
    )
    need(data.get("quick") is False, "a --quick run checks a script; it is not a measurement")
    machine = data.get("machine")
    need(isinstance(machine, dict), "'machine' must be an object")
    for key in ("date", "cpu", "cores", "memory_gib", "python", "nipype_heatmap"):
        need(key in machine, f"'machine' lacks '{key}'")
    for key in ("targets", "checks"):
        rows = data.get(key, [])
        need(isinstance(rows, list), f"'{key}' must be a list")
        for row in rows:
            need(isinstance(row, dict) and "holds" in row, f"every item of '{key}' needs 'holds'")
    return data


# -- docutils nodes ------------------------------------------------------------------------
def _para(*parts: nodes.Node | str) -> nodes.paragraph:
    para = nodes.paragraph()
    for part in parts:
        para += nodes.Text(part) if isinstance(part, str) else part
    return para


def _table(header: list[str], rows: list[list[str]]) -> nodes.table:
    table = nodes.table(classes=["benchmark-table"])
    group = nodes.tgroup(cols=len(header))
    table += group
    for _ in header:
        group += nodes.colspec(colwidth=1)
    for section, lines in ((nodes.thead(), [header]), (nodes.tbody(), rows)):
        for line in lines:
            row = nodes.row()
            for text in line:
                row += nodes.entry("", _para(text))
            section += row
        group += section
    return table


def _value(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "-"}[value]
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    if isinstance(value, list):
        return ", ".join(_value(v) for v in value)
    return str(value)


def _is_plain(value: object) -> bool:
    return (
        value is None
        or isinstance(value, str | int | float | bool)
        or (isinstance(value, list) and all(_is_plain(v) for v in value))
    )


def _is_number(value: object) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _contestants(rows: dict) -> nodes.table:
    first = next(iter(rows.values())).get("median_s")
    body = []
    for label, row in rows.items():
        median, rss = row.get("median_s"), row.get("peak_rss_mib")
        ratio = f"{median / first:.2f}" if median and first else "-"
        body.append(
            [
                label,
                "not run" if median is None else f"{median:.3f}",
                ratio,
                "-" if rss is None else f"{rss:.0f}",
            ]
        )
    return _table(["contestant", "median (s)", f"/ {next(iter(rows))}", "peak RSS (MiB)"], body)


def _comparisons(rows: dict) -> nodes.table:
    body = []
    for label, row in rows.items():
        if row.get("identical"):
            verdict = "bit for bit"
        else:
            parts = [f"{row['voxels_differing']} voxels"] if "voxels_differing" in row else []
            if row.get("max_abs") is not None:
                parts.append(f"max |diff| {row['max_abs']:.3g}")
            if row.get("max_ulps") is not None:
                parts.append(f"{row['max_ulps']} float32 ulps")
            verdict = "differs: " + ", ".join(parts or ["see the file"])
            if row.get("expected_difference"):
                verdict += " (expected: round-off)"
        body.append([label, verdict])
    return _table(["compared", "result"], body)


def _section(title: str, content: object) -> list[nodes.Node]:
    """Tables for one object of a results file, headed by where it is in the file."""
    if not isinstance(content, dict) or not content:
        return []
    values = list(content.values())
    if all(isinstance(v, dict) and _is_number(v.get("median_s", "")) for v in values):
        return [nodes.rubric(text=title), _contestants(content)]
    if all(isinstance(v, dict) and "identical" in v for v in values):
        return [nodes.rubric(text=title), _comparisons(content)]
    if all(isinstance(v, dict) and v and all(map(_is_plain, v.values())) for v in values):
        columns = list(dict.fromkeys(k for v in values for k in v if k not in _NOT_SHOWN))
        rows = [[label] + [_value(v.get(c)) for c in columns] for label, v in content.items()]
        return [nodes.rubric(text=title), _table([""] + columns, rows)]
    out: list[nodes.Node] = []
    plain = [[k, _value(v)] for k, v in content.items() if k not in _NOT_SHOWN and _is_plain(v)]
    if plain:
        out += [nodes.rubric(text=title or "details"), _table(["", "value"], plain)]
    for key, value in content.items():
        if key not in _NOT_SHOWN and not _is_plain(value):
            out += _section(f"{title}: {key}" if title else key, value)
    return out


def results_nodes(data: dict, source: str) -> list[nodes.Node]:
    """The docutils nodes of one results file (built directly, so that the directive
    renders the same in reStructuredText and Markdown pages)."""
    machine = data["machine"]
    load = machine.get("load_average_1_5_15")
    out: list[nodes.Node] = [
        nodes.rubric(text=TITLES[data["benchmark"]], classes=["benchmark-title"]),
        _para(
            nodes.strong(text=machine["date"]),
            f": {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
            f"Python {machine['python']}, nipype_heatmap {machine['nipype_heatmap']}"
            + (f", load average {_value(load)} at the end" if load else "")
            + " (",
            nodes.literal(text=source),
            ").",
        ),
    ]
    if data.get("settings"):
        out.append(_para("Settings: " + "; ".join(
            f"{k} {_value(v)}" for k, v in data["settings"].items()
        ) + "."))  # fmt: skip
    body = {k: v for k, v in data.items() if k not in {"machine", "settings", "targets", "checks"}}
    out += _section("", body)
    for key, label in (("targets", "target"), ("checks", "check")):
        if data.get(key):
            rows = [
                [row[label]]
                + ([_value(row.get("value")), row.get("limit", "")] if key == "targets" else [])
                + [_VERDICTS[row["holds"]]]
                for row in data[key]
            ]
            header = [label] + (["value", "limit"] if key == "targets" else []) + ["verdict"]
            out += [nodes.rubric(text=key), _table(header, rows)]
    return out


class BenchmarkResults(SphinxDirective):
    """Render every results file of a folder, in the order of :data:`TITLES`."""

    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        _, folder = self.env.relfn2path(self.arguments[0], self.env.docname)
        files = [
            p
            for p in Path(folder).glob("*.json")
            if p.name != "schema.json" and not p.name.endswith("-quick.json")
        ]
        if not files:
            raise ExtensionError(f"benchmark-results: no results file in {folder}")
        loaded = []
        for path in files:
            self.env.note_dependency(str(path))
            loaded.append((load_results(path), path))
        loaded.sort(key=lambda item: list(TITLES).index(item[0]["benchmark"]))
        container = nodes.container(classes=["benchmark-results"])
        for data, path in loaded:
            container += results_nodes(data, f"benchmarks/results/{path.name}")
        return [container]


def setup(app):
    app.add_directive("benchmark-results", BenchmarkResults)
    return {"version": "2.0", "parallel_read_safe": True, "parallel_write_safe": True}
