"""The params.yaml reference page (docs/reference/params.md), generated from the two places that define a key.

- The section dataclasses of this package: every field's name, its type (Literal choices spelled out), the comment
  on its line, the class's docstring (or its module's, for a section alone in its module), and the message of the
  range check `__post_init__` runs on it (`check(ok, "section.key", value, "must be ...")`, read from the source).
- The shipped params.yaml: each key's value, the comment on its line and the comment lines under it (continuations),
  and the comment lines just above it. A section's own comments introduce its table.

The docs build calls `params_reference()` (docs/hooks.py), so the page follows the code and params.yaml and cannot
drift from them; `python -m treegrpo.config.reference` prints it. Only what params.yaml's block style uses is read
(`treegrpo.config.edit.parse_entries`).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import re
import sys
import textwrap
import tokenize
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from treegrpo.config.edit import Entry, parse_entries, render

HEADER = """# params.yaml reference

Every key of `params.yaml`, section by section. This page is generated when the docs are built, from the section
dataclasses in `treegrpo/config/` (names, types, checks) and the comments of the shipped `params.yaml` (what a value
is and why it was chosen) by `treegrpo/config/reference.py`: edit those, not this page.

`params.yaml` is loaded strictly: an unknown, missing or mistyped key, or a value out of its range, stops the
`check` stage with the dotted key in the message, before anything runs. Override one value for an experiment with
`dvc exp run -S section.key=value`; apply a whole profile with `treegrpo profile paper`.
"""


def _type_text(tp: Any) -> str:
    """An annotation as a reader says it: `int`, `'a'` or `'b'`, `list of str`, `str or null`."""
    origin = get_origin(tp)
    if origin is Literal:
        return " or ".join(f"`{a!r}`" for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_text(a) for a in get_args(tp))
    if origin in (list, tuple):
        return f"list of {_type_text(get_args(tp)[0])}"
    if origin in (dict, Mapping, typing.Mapping):
        return f"mapping of {_type_text(get_args(tp)[0])} to {_type_text(get_args(tp)[1])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _doc(cls: type, where: str) -> str:
    """The class's own docstring, else its module's when the module is named after the section (`sampler.py`)."""
    doc = cls.__doc__ or ""
    if doc and not doc.startswith(f"{cls.__name__}("):  # dataclasses write `Name(field: type, ...)` when there is none
        return inspect.cleandoc(doc)
    module = sys.modules[cls.__module__]
    return inspect.cleandoc(module.__doc__ or "") if module.__name__.rsplit(".", 1)[-1] == where else ""


def _field_comments(cls: type) -> dict[str, str]:
    """field -> the comment on its line in the class body, with the comment-only lines right under it."""
    source = "".join(inspect.getsourcelines(cls)[0])  # a module-level class: its lines parse on their own
    comments: dict[int, str] = {}  # line (1-based, in `source`) -> its comment, '#' included
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string
    out = {}
    for stmt in ast.parse(source).body[0].body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.lineno in comments:
            text, line = [comments[stmt.lineno]], stmt.lineno + 1
            while comments.get(line, "").startswith("#  "):  # continuation lines ('#   ...') under it
                text.append(comments[line])
                line += 1
            out[stmt.target.id] = " ".join(t.lstrip("#").strip() for t in text)
    return out


def _literal_text(node: ast.AST) -> str | None:
    """A string literal's text; an f-string's without its `{...}` values; None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        text = "".join(v.value if isinstance(v, ast.Constant) else "\0" for v in node.values)
        return re.sub(r" = \0|\0", "", text)  # "must be >= data.min_chars = {...}": the key says it
    return None


def check_messages(cls: type) -> dict[str, str]:
    """dotted key -> the message of each `check(ok, "section.key", value, "message")` in `cls.__post_init__` whose
    key is a literal (checks inside loops over keys name them with an f-string and are left out)."""
    post = getattr(cls, "__post_init__", None)
    if post is None:
        return {}
    tree = ast.parse(textwrap.dedent(inspect.getsource(post)))
    out: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "check" and len(node.args) == 4:
            key, message = node.args[1], _literal_text(node.args[3])
            if isinstance(key, ast.Constant) and isinstance(key.value, str) and message:
                out.setdefault(key.value, []).append(message)
    return {key: "; ".join(messages) for key, messages in out.items()}


def _comment_block(lines: list[str], entry: Entry) -> tuple[str, str]:
    """(the comment lines just above the key, its own comment with its continuation lines) as text."""
    above, i = [], entry.start - 1
    while i >= 0 and lines[i].lstrip().startswith("#") and _indent(lines[i]) == entry.indent:  # not a continuation
        above.insert(0, lines[i].strip().lstrip("#").strip())
        i -= 1
    own = [entry.comment.lstrip("#").strip()] if entry.comment else []
    if not entry.block:  # a value's continuation lines (comments or a wrapped list) sit under it, indented
        own += [line.strip().lstrip("#").strip() for line in lines[entry.start + 1 : entry.end]
                if line.lstrip().startswith("#")]
    return " ".join(above), " ".join(own)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _mapping_comments(lines: list[str], entry: Entry) -> str:
    """Every comment of a mapping-valued key (`reward.weights`): its line's and the lines inside it."""
    own = [entry.comment.lstrip("#").strip()] if entry.comment else []
    return " ".join(own + [line.strip().lstrip("#").strip() for line in lines[entry.start + 1 : entry.end]
                           if line.lstrip().startswith("#")])


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _section(cls: type, where: str, raw: Mapping[str, Any], entries: dict[str, Entry], lines: list[str],
             level: int) -> list[str]:
    """The heading, introduction and key table of section `where` (dataclass `cls`), then its sub-sections."""
    entry = entries[where]
    above, own = _comment_block(lines, entry)
    out = ["", f"{'#' * level} `{where}`", ""]
    for text in (_doc(cls, where), above, own):
        if text:
            out += [text, ""]
    hints, comments, checks = get_type_hints(cls), _field_comments(cls), check_messages(cls)
    rows, subsections = [], []
    for field in dataclasses.fields(cls):
        key, tp = f"{where}.{field.name}", hints[field.name]
        if dataclasses.is_dataclass(tp):
            subsections.append((tp, key))
            continue
        entry = entries[key]
        if entry.block:
            above, own = "", _mapping_comments(lines, entry)
        else:
            above, own = _comment_block(lines, entry)
        notes = " ".join(text for text in (above, own) if text) or comments.get(field.name, "")  # the code's: a gap
        if key in checks:
            notes += f"<br>*Checked:* {checks[key]}."
        one_line = entry.end == entry.start + 1 and not entry.block
        value = entry.value if one_line else render(raw[field.name])  # the file's own spelling (`1.0e-3`)
        rows.append(f'| <span id="{key}"></span>`{field.name}` | {_cell(_type_text(tp))} | `{_cell(value)}` | '
                    f"{_cell(notes)} |")
    if rows:
        out += ["| key | type | shipped | what and why |", "|---|---|---|---|", *rows]
    for sub, key in subsections:
        out += _section(sub, key, raw[key.rsplit(".", 1)[1]], entries, lines, level + 1)
    return out


def params_reference(params_text: str, source: str = "params.yaml") -> str:
    """The reference page for `params_text` (the shipped params.yaml's text), as Markdown.

    Args:
        params_text: params.yaml's text; it must load (`parse_params`), so a broken file fails the docs build.
        source: its name, for error messages.
    Returns:
        the page: a header, then one heading and one table per section and sub-section, in the file's order.
    """
    from treegrpo.config import Params, parse_params, read_yaml

    raw = read_yaml(params_text, source)
    parse_params(raw, source)  # validated like every stage reads it
    entries, lines = parse_entries(params_text), params_text.splitlines()
    out = [HEADER.rstrip()]
    hints = get_type_hints(Params)
    for field in dataclasses.fields(Params):
        out += _section(hints[field.name], field.name, raw[field.name], entries, lines, 2)
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "params.yaml")
    print(params_reference(path.read_text(), str(path)), end="")
