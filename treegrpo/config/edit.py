"""Set values in params.yaml's text, line by line: the one writer of `treegrpo profile` and the flow's `overrides`.

A YAML round trip (ruamel) re-spells what it does not need to touch (`null` written empty, a wrapped list re-wrapped),
so `git diff params.yaml` shows more than the values that changed. Here only the lines of a changed key are
rewritten, and only when its value changes:
- the value's text is the profile's own spelling (`1.0e-5`), or a YAML spelling of the Python value;
- the comment on a rewritten line described the old value, so it goes; the profile's comment on that key, if it has
  one, takes its place. Continuation comment lines (indented under the key) go with it. Comments on their own line
  above a key describe the key and stay, as does the comment on the line of a mapping whose entries are below it;
- a mapping value (`reward.weights`) is rewritten entry by entry below its key, in block style.
The result is read back and compared with what was asked (every other value the same), then validated.

Handles the block-style YAML params.yaml is written in (mappings by indentation, scalars and flow lists as values,
comments); not anchors, multi-document files or block scalars.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, get_type_hints

from treegrpo.config.base import ParamsError

KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.-]*):(?P<rest>\s.*|)$")
PLAIN = re.compile(r"[A-Za-z0-9_/][\w./+~@-]*(?: [\w./+~@-]+)*")  # a string YAML reads back as itself, unquoted
COMMENT_COLUMN = 32  # where params.yaml's comments start


@dataclass(frozen=True)
class Entry:
    """One key of a YAML text: its lines [start, end), indentation, value text and comment."""

    dotted: str
    start: int
    end: int
    indent: int
    value: str  # the text after the colon, without the comment ('' for a block mapping)
    comment: str | None  # '# ...' on the key's line
    comment_col: int | None
    block: bool  # a mapping whose entries follow on more-indented lines


def _split_comment(rest: str) -> tuple[str, str | None, int]:
    """`rest` of a line -> (value, comment or None, the comment's offset in `rest`); quotes are respected."""
    quote = None
    for i, ch in enumerate(rest):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or rest[i - 1].isspace()):
            return rest[:i].strip(), rest[i:].rstrip(), i
    return rest.strip(), None, -1


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def parse_entries(text: str) -> dict[str, Entry]:
    """Every key of `text` (nested keys dotted: `sampler.window.alpha`), with the lines it spans."""
    lines = text.splitlines()
    entries: dict[str, Entry] = {}
    stack: list[tuple[int, str]] = []  # (indent, dotted) of the mappings enclosing the current line
    i = 0
    while i < len(lines):
        match = KEY_LINE.match(lines[i])
        if not match or lines[i].lstrip().startswith("#"):
            i += 1
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        dotted = ".".join([*(d for _, d in stack[-1:]), match["key"]])
        value, comment, offset = _split_comment(match["rest"])
        end = _span_end(lines, i, indent)
        block = value == "" and any(KEY_LINE.match(line) and not line.lstrip().startswith("#")
                                    for line in lines[i + 1 : end])
        col = len(lines[i]) - len(match["rest"]) + offset if comment else None
        entries[dotted] = Entry(dotted, i, end, indent, value, comment, col, block)
        if block:
            stack.append((indent, dotted))
            i += 1
        else:
            i = end  # a value's continuation lines (a wrapped flow list, comments under it) hold no keys
    return entries


def _span_end(lines: list[str], start: int, indent: int) -> int:
    """The first line after `start` that is not more indented than the key (blank lines inside a span kept)."""
    end = start + 1
    j = start + 1
    while j < len(lines):
        if not lines[j].strip():
            j += 1
            continue
        if _indent(lines[j]) <= indent:
            break
        j += 1
        end = j
    return end


def render(value: Any) -> str:
    """A YAML flow spelling of `value` that YAML 1.2 (DVC, `read_yaml`) and 1.1 (PyYAML) both read back as it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        if e and "." not in mantissa:  # 1e-05: YAML 1.1 needs the dot to read a float
            text = f"{mantissa}.0e{exponent}"
        return text
    if isinstance(value, str):
        return value if _plain_ok(value) else json.dumps(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{render(str(k))}: {render(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(render(v) for v in value) + "]"
    raise ParamsError(f"{value!r}: a {type(value).__name__} is not a params.yaml value (numbers, strings, lists, "
                      "mappings, null)")


def _plain_ok(text: str) -> bool:
    import yaml

    from treegrpo.config import read_yaml

    return bool(PLAIN.fullmatch(text)) and read_yaml(text) == text and yaml.safe_load(text) == text


def _with_comment(content: str, comment: str | None, col: int | None) -> str:
    if not comment:
        return content
    col = max(col or COMMENT_COLUMN, len(content) + 1)
    return content.ljust(col) + comment


@dataclass(frozen=True)
class Change:
    """A value to set at `dotted`: the Python value, and optionally the profile's lines for it."""

    value: Any
    text: str | None = None  # the value's own spelling (one line), e.g. `1.0e-5`
    body: tuple[str, ...] = ()  # a block mapping's entry lines (their indentation relative to the key's: `shift`)
    body_indent: int = 0  # the indentation of the key these body lines were under
    comment: str | None = None  # '# ...': the profile's comment on the key's line


def set_values(text: str, changes: Mapping[str, Change | Any], source: str = "params.yaml") -> str:
    """`text` with each dotted key of `changes` set, rewriting only the lines of the keys whose value changes.

    Args:
        text: params.yaml's text.
        changes: dotted key -> `Change` (or a plain value); each key must already be in `text`.
        source: what the text is, for error messages.
    Returns:
        the new text; every other line as it was.
    Raises:
        ParamsError: a key `text` does not have (`changes` never adds one), or a value that cannot be written.
    """
    from treegrpo.config import read_yaml

    entries = parse_entries(text)
    before = read_yaml(text, source)
    expected = json.loads(json.dumps(before))
    edits: list[tuple[Entry, list[str]]] = []
    for dotted, change in changes.items():
        change = change if isinstance(change, Change) else Change(change)
        entry = entries.get(dotted)
        if entry is None:
            raise ParamsError(f"{dotted!r} is not a key of {source} (a typo? keys are dotted, e.g. "
                              "train.iterations); nothing was changed")
        _assign(expected, dotted.split("."), change.value)
        if _lookup(before, dotted.split(".")) == change.value:
            continue
        edits.append((entry, _new_lines(text.splitlines()[entry.start : entry.end], entry, change)))
    lines = text.splitlines()
    for entry, new in sorted(edits, key=lambda e: e[0].start, reverse=True):
        lines[entry.start : entry.end] = new
    out = "\n".join(lines) + ("\n" if text.endswith("\n") else "")
    if read_yaml(out, source) != expected:  # every changed value reads back, nothing else moved
        raise ParamsError(f"{source}: rewriting {', '.join(changes)} would not read back as written; set them by hand")
    return out


def _lookup(tree: Any, path: list[str]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _assign(tree: Any, path: list[str], value: Any) -> None:
    _lookup(tree, path[:-1])[path[-1]] = json.loads(json.dumps(value))


def _new_lines(old: list[str], entry: Entry, change: Change) -> list[str]:
    """The lines replacing `old` (the entry's span) for `change`."""
    pad, key = " " * entry.indent, entry.dotted.rsplit(".", 1)[-1]
    if entry.block and isinstance(change.value, Mapping):  # block style below the key; the key line's comment stays
        head = _with_comment(f"{pad}{key}:", change.comment or entry.comment, entry.comment_col)
        if change.body:
            shift = entry.indent - change.body_indent
            body = [(" " * shift + line) if shift >= 0 else line[-shift:] for line in change.body]
        else:
            body = [f"{pad}  {render(str(k))}: {render(v)}" for k, v in change.value.items()]
        return [head, *body]
    value = change.text if change.text is not None else render(change.value)
    return [_with_comment(f"{pad}{key}: {value}", change.comment, entry.comment_col)]


def overlay_changes(overlay_text: str, sections: set[str], source: str) -> dict[str, Change]:
    """A profile's text -> dotted key -> `Change`, with the profile's spelling, comments and block bodies.

    Args:
        overlay_text: the profile (nested mappings, only the keys it changes).
        sections: the dotted paths that are params sections (`section_paths()`): a mapping at another path (such as
            `reward.weights`) is one value.
        source: the profile's name, for errors.
    """
    from treegrpo.config import read_yaml

    tree = read_yaml(overlay_text, source) or {}
    entries = parse_entries(overlay_text)
    lines = overlay_text.splitlines()
    out: dict[str, Change] = {}

    def walk(node: Mapping[str, Any], where: str) -> None:
        for key, value in node.items():
            dotted = f"{where}.{key}" if where else str(key)
            if isinstance(value, Mapping) and dotted in sections:
                walk(value, dotted)
                continue
            entry = entries[dotted]
            one_line = entry.end == entry.start + 1 and not entry.block
            body = tuple(lines[entry.start + 1 : entry.end]) if entry.block else ()
            out[dotted] = Change(value, entry.value if one_line else None, body, entry.indent, entry.comment)

    walk(tree, "")
    return out


def section_paths(cls: type | None = None, where: str = "") -> set[str]:
    """The dotted paths of params.yaml's sections and sub-sections (`model`, `sampler.window`, `reward.hpsv2`)."""
    if cls is None:
        from treegrpo.config import Params

        cls = Params
    out: set[str] = set()
    for field in dataclasses.fields(cls):
        tp = get_type_hints(cls)[field.name]
        if dataclasses.is_dataclass(tp):
            dotted = f"{where}.{field.name}" if where else field.name
            out |= {dotted, *section_paths(tp, dotted)}
    return out
