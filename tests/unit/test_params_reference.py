"""The params.yaml reference (docs/reference/params.md, generated when the docs are built): every field of every
section dataclass has a row, and each row carries what the two sources say of that key: the annotation's type and
choices, the shipped value, the comments of params.yaml, and the range check's message."""

import dataclasses
from typing import get_type_hints

import pytest

from tests.conftest import REPO
from treegrpo.config import Params, ParamsError
from treegrpo.config.data import DataParams
from treegrpo.config.edit import parse_entries
from treegrpo.config.reference import check_messages, params_reference
from treegrpo.config.train import ALGORITHMS

TEXT = (REPO / "params.yaml").read_text()


def fields(cls=Params, where=""):
    """(dotted key, dataclass, field name) of every leaf field, sub-sections walked into."""
    hints = get_type_hints(cls)
    for field in dataclasses.fields(cls):
        dotted = f"{where}.{field.name}" if where else field.name
        if dataclasses.is_dataclass(hints[field.name]):
            yield from fields(hints[field.name], dotted)
        else:
            yield dotted, cls, field.name


def rows(page: str) -> dict[str, str]:
    """dotted key -> its table row."""
    out = {}
    for line in page.splitlines():
        if line.startswith('| <span id="'):
            out[line.split('"')[1]] = line
    return out


@pytest.fixture(scope="module")
def page() -> str:
    return params_reference(TEXT)


def test_every_field_of_every_section_has_a_row(page):
    expected = [dotted for dotted, _, _ in fields()]
    assert len(expected) > 100  # every section, sub-sections included
    assert list(rows(page)) == expected  # in the file's order, nothing else
    sections = [f.name for f in dataclasses.fields(Params)]
    assert [line[4:-1] for line in page.splitlines() if line.startswith("## `")] == sections


def test_each_row_has_the_shipped_comment_and_value(page):
    """The comment on a key's line in params.yaml (continuation lines under it too) is in that key's row, and the
    value as the file spells it."""
    table, entries = rows(page), parse_entries(TEXT)
    for dotted in table:
        entry = entries[dotted]
        if entry.comment and not entry.block:
            assert entry.comment.lstrip("#").strip().replace("|", "\\|") in table[dotted], dotted
        if entry.end == entry.start + 1 and not entry.block:
            assert f"`{entry.value}`" in table[dotted], dotted


def test_types_choices_and_checks_come_from_the_dataclasses(page):
    table = rows(page)
    assert all(f"`{name!r}`" in table["train.algorithm"] for name in ALGORITHMS)
    assert "| str or null |" in table["model.revision"]
    assert "| list of str |" in table["lora.target_modules"]
    assert "| mapping of str to float |" in table["reward.weights"]
    found = 0
    for dotted, cls, _ in fields():
        message = check_messages(cls).get(dotted)
        if message:
            assert f"*Checked:* {message.replace('|', chr(92) + '|')}." in table[dotted], dotted
            found += 1
    assert found > 50
    # an f-string message loses its `{...}` values: "must be >= data.min_chars = {self.min_chars}"
    assert check_messages(DataParams)["data.max_chars"] == "must be >= data.min_chars"


def test_the_page_follows_the_text_it_is_given():
    """Generated from params.yaml's text, not from a copy: a changed comment shows, a broken file fails the build."""
    lines = TEXT.splitlines()
    seed = parse_entries(TEXT)["train.seed"]
    lines[seed.start] = "  seed: 7                       # a seed chosen for this test"
    changed = "\n".join(lines) + "\n"
    assert "`7` | a seed chosen for this test" in rows(params_reference(changed))["train.seed"]
    lines.insert(seed.start, "  sead: 1")
    with pytest.raises(ParamsError, match="unknown key"):
        params_reference("\n".join(lines) + "\n")
