"""`treegrpo bench`'s results folder: untracked unless named, so a plain run never overwrites committed results."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from treegrpo.cli import make_parser
from treegrpo.cli.bench import output_dir

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("size", ["tiny", "small", "sd35m", "world"])
def test_default_out_is_outside_the_tracked_results_and_ignored_by_git(size):
    out = output_dir(make_parser().parse_args(["bench", "--size", size]))
    assert out == Path("outputs/bench") / size
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the git checkout to ask git what it ignores")
    # git check-ignore exits 0 for an ignored path, 1 for one it would track (as benchmarks/results/<size> is)
    ignored = subprocess.run(["git", "check-ignore", "-q", str(out / "report.md")], cwd=REPO, check=False)
    assert ignored.returncode == 0, f"{out} is not gitignored"
    tracked = subprocess.run(["git", "check-ignore", "-q", f"benchmarks/results/{size}/report.md"], cwd=REPO,
                             check=False)
    assert tracked.returncode == 1


def test_tracked_results_are_written_only_when_named():
    args = make_parser().parse_args(["bench", "--size", "tiny", "--out", "benchmarks/results/tiny"])
    assert output_dir(args) == Path("benchmarks/results/tiny")
