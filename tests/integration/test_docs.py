"""The docs site builds with `mkdocs build --strict` (what CI checks): a broken link or anchor, a page missing from
the navigation or a docstring mkdocstrings cannot read fails it. The build generates the params reference from the
code and serves the committed benchmark plots (docs/hooks.py), offline."""

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(REPO / "mkdocs.yml"), "--site-dir", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_the_site_builds_strictly_with_every_page(site):
    pages = sorted(p.relative_to(REPO / "docs").with_suffix(".html").as_posix()
                   for p in (REPO / "docs").rglob("*.md"))
    assert pages and all((site / page).is_file() for page in pages)
    assert (site / "reference" / "params.html").is_file()  # generated, not in docs/


def test_the_params_reference_and_the_api_are_generated(site):
    params = (site / "reference" / "params.html").read_text()
    assert 'id="train.learning_rate"' in params and 'id="sampler.window.alpha"' in params
    api = (site / "reference" / "api.html").read_text()
    assert "grpo_loss" in api and "load_params" in api


def test_the_benchmark_plots_are_served_from_their_results_folders(site):
    page = (site / "benchmarks.html").read_text()
    images = re.findall(r'<img [^>]*src="([^"]+\.png)"', page)
    assert images and all((site / image).is_file() for image in images)
    assert all(image.startswith("results/") for image in images)


def test_the_measured_figures_are_in_one_section_of_each_page():
    for page in ("world.md", "benchmarks.md"):
        text = (REPO / "docs" / page).read_text()
        assert len(re.findall(r"^## Measured$", text, flags=re.MULTILINE)) == 1, page
