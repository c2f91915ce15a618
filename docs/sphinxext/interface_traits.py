"""List a Nipype interface's inputs and outputs under its docstring, from its trait specs.

The trait spec is an interface's type system (house style): each trait's one-sentence
``desc=`` is what the user reads here, mandatory inputs first, so the page cannot drift
from the code. Also shows the ``Inputs``/``Outputs`` sections of workflow builders' docstrings (the
inputnode/outputnode fields, as sMRIPrep writes them), which numpydoc does not know as
sections, as rubrics before the examples.
"""

from __future__ import annotations

import re
import warnings

_SECTION = re.compile(r"^(Inputs|Outputs)\n-+$", re.MULTILINE)
_NEXT_SECTION = re.compile(r"^(?!Inputs|Outputs)[A-Z][A-Za-z ]*\n-+$", re.MULTILINE)


_SHORT_TYPES = {
    "a boolean": "bool",
    "an integer": "int",
    "an integer (int or long)": "int",
    "a float": "float",
    "a string": "str",
    "a dictionary with keys which are a value of type 'str' and with values which are any "
    "value": "dict",
}


def _handler_type(handler) -> str:
    name = type(handler).__name__
    if name in ("InputMultiObject", "OutputMultiObject", "MultiObject", "List"):
        inner = getattr(handler, "item_trait", None)
        return f"list of {_handler_type(inner.handler)}" if inner is not None else "list"
    if "File" in name:
        return "file"
    if "Directory" in name:
        return "folder"
    info = " ".join(str(getattr(handler, "info_text", "") or name).split())
    return _SHORT_TYPES.get(info, info)


def _trait_type(trait) -> str:
    return _handler_type(trait.trait_type)


def _trait_lines(spec, title: str, mandatory_first: bool) -> list[str]:
    names = sorted(spec.visible_traits()) if spec is not None else []
    if not names:
        return []
    traits = spec.traits()
    if mandatory_first:
        names.sort(key=lambda n: (not traits[n].mandatory, n))
    lines = ["", f".. rubric:: {title}", ""]
    for name in names:
        trait = traits[name]
        flags = []
        if getattr(trait, "mandatory", False):
            flags.append("mandatory")
        if trait.xor:
            flags.append("exclusive with " + ", ".join(f"``{x}``" for x in trait.xor))
        if mandatory_first and trait.usedefault and trait.default is not None:
            flags.append(f"default ``{trait.default!r}``")
        if trait.nohash:
            flags.append("not hashed")
        head = f"``{name}`` ({_trait_type(trait)}"
        head += (": " + "; ".join(flags)) if flags else ""
        lines += [f"* {head})", f"  {' '.join((trait.desc or '').split())}"]
    return lines + [""]


def _add_traits(app, what, name, obj, options, lines):
    if what != "class":
        return
    try:
        from nipype.interfaces.base import BaseInterface
    except ImportError:  # pragma: no cover
        return
    if not (isinstance(obj, type) and issubclass(obj, BaseInterface)):
        return
    inputs = obj.input_spec() if obj.input_spec else None
    outputs = obj.output_spec() if obj.output_spec else None
    lines += _trait_lines(inputs, "Inputs", mandatory_first=True)
    lines += _trait_lines(outputs, "Outputs", mandatory_first=False)


_STASH: dict[str, list[str]] = {}


def _take_builder_sections(app, what, name, obj, options, lines):
    """Take the ``Inputs``/``Outputs`` sections out of a builder's docstring (numpydoc,
    which runs next, does not know them) ..."""
    if what != "function" or not name.rsplit(".", 1)[-1].startswith("init_"):
        return
    text = "\n".join(lines)
    found = list(_SECTION.finditer(text))
    if not found:
        return
    start = found[0].start()
    end = _NEXT_SECTION.search(text, found[-1].end())
    stop = end.start() if end else len(text)
    body = _SECTION.sub(lambda m: f".. rubric:: {m.group(1)}\n", text[start:stop])
    _STASH[name] = body.split("\n")
    lines[:] = (text[:start] + text[stop:]).split("\n")


def _put_builder_sections(app, what, name, obj, options, lines):
    """... and put them back, as rubrics with definition lists, before the examples."""
    stashed = _STASH.pop(name, None)
    if stashed is None:
        return
    where = next(
        (i for i, line in enumerate(lines) if line.strip() == ".. rubric:: Examples"), len(lines)
    )
    lines[where:where] = ["", *stashed, ""]


def _skip_spec_aliases(app, what, name, obj, skip, options):
    """``input_spec``/``output_spec`` are listed above as inputs and outputs."""
    if name in ("input_spec", "output_spec"):
        return True
    return None


def setup(app):
    # numpydoc also parses the raw docstring for signatures, and warns (a Python warning,
    # not a Sphinx one) about the two sections that this extension shows itself.
    warnings.filterwarnings(
        "ignore", message=r"Unknown section (Inputs|Outputs) in the docstring of init_"
    )
    app.connect("autodoc-skip-member", _skip_spec_aliases)
    # numpydoc rewrites docstrings at the default priority (500).
    app.connect("autodoc-process-docstring", _take_builder_sections, priority=100)
    app.connect("autodoc-process-docstring", _put_builder_sections, priority=900)
    app.connect("autodoc-process-docstring", _add_traits, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
