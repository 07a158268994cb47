"""MkDocs hooks (mkdocs.yml `hooks:`): what the site takes from the repository when it is built.

- `reference/params.md` is generated from the section dataclasses and the shipped params.yaml
  (`treegrpo.config.reference`), so the reference cannot drift from the code or the file.
- The committed benchmark plots (`benchmarks/results/*/*.png`) are served as `results/<name>/<plot>.png`, so
  docs/benchmarks.md shows them without a second copy in git.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

REPO = Path(__file__).resolve().parents[1]


def on_files(files, config):
    from treegrpo.config.reference import params_reference

    params = REPO / "params.yaml"
    page = params_reference(params.read_text(), str(params))
    files.append(File.generated(config, "reference/params.md", content=page))
    root = REPO / "benchmarks"
    for png in sorted((root / "results").glob("*/*.png")):
        path = png.relative_to(root).as_posix()
        files.append(File(path, str(root), config["site_dir"], config["use_directory_urls"]))
    return files
