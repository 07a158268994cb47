"""The README a newcomer reads: short, the quick start's two commands (the second is what CI runs), the GPU path
linked from the first screen, one "Measured" section, and every link and picture pointing at something that exists."""

import re

from tests.conftest import REPO

README = (REPO / "README.md").read_text()
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)|<img [^>]*src=\"([^\"]+)\"")


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, flags=re.MULTILINE | re.DOTALL)
    assert match, f"README has no section '## {title}'"
    return match.group(1)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_short_enough_to_read():
    assert len(README) < 8000


def test_quick_start_is_two_commands_and_the_second_is_what_ci_runs():
    blocks = re.findall(r"^```\w*\n(.*?)^```", section("Quick start"), flags=re.MULTILINE | re.DOTALL)
    commands = [line.strip() for block in blocks for line in block.splitlines() if line.strip()]
    assert commands == ["make run", "make test"]
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert ci == ["make test"]


def test_the_gpu_path_is_linked_from_the_first_screen():
    first_screen = "\n".join(README.splitlines()[:15])
    assert "(#your-own-model-and-reward-on-a-gpu)" in first_screen
    assert "treegrpo profile paper" in section("Your own model and reward on a GPU")


def test_the_measured_figures_are_in_one_section():
    assert len(re.findall(r"^## Measured$", README, flags=re.MULTILINE)) == 1
    assert "| prompts |" in section("Measured")


def test_every_link_and_picture_resolves():
    headings = {slug(h) for h in re.findall(r"^#+ (.*)$", README, flags=re.MULTILINE)}
    targets = [a or b for a, b in LINK.findall(README)]
    assert len(targets) > 10
    for target in targets:
        if target.startswith(("http://", "https://")):
            continue
        if target.startswith("#"):
            assert target[1:] in headings, target
        else:
            assert (REPO / target.split("#")[0]).exists(), target
