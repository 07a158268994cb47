"""`treegrpo profile NAME`: apply a shipped profile (profiles/NAME.yaml) to params.yaml, validated first.

A profile is an overlay: it lists only the keys that differ from the embedded default. Applying it merges those
keys into params.yaml with ruamel.yaml's round trip (as `dvc exp run -S` does), so the comments stay.
`git checkout params.yaml` returns to the embedded default.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

import yaml as pyyaml

from treegrpo.config import parse_params
from treegrpo.errors import UserError

PROFILES = Path(__file__).resolve().parents[2] / "profiles"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "profile",
        help="apply a shipped profile to params.yaml (paper: SD3.5-Medium at the paper's settings)",
        description="Merge profiles/NAME.yaml (only the keys it changes) into params.yaml, keeping comments, after "
        "validating the result. Undo with `git checkout params.yaml`.",
    )
    p.add_argument("name", help="profile name: a file profiles/NAME.yaml (shipped: paper)")
    p.add_argument("--params", default="params.yaml", help="the file to change (default: params.yaml)")
    p.add_argument("--dry-run", action="store_true", help="validate and print the result, change nothing")
    p.set_defaults(func=run)


def merge(base: Any, overlay: Any, where: str = "") -> None:
    """Merge mapping `overlay` into `base` in place; an overlay key the base lacks is an error (a typo)."""
    for key, value in overlay.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in base:
            raise UserError(f"profile key {dotted} is not in params.yaml; fix the profile")
        if isinstance(value, dict) and isinstance(base[key], dict) and not dotted.endswith("weights"):
            merge(base[key], value, dotted)
        else:
            base[key] = value


def apply_profile(name: str, params_path: str | Path) -> str:
    """Return params.yaml's text with profile `name` merged in (validated); raise UserError if it can't be."""
    from ruamel.yaml import YAML

    source = PROFILES / f"{name}.yaml"
    if not source.is_file():
        names = sorted(p.stem for p in PROFILES.glob("*.yaml"))
        raise UserError(f"profile {name!r}: no {source}; shipped profiles: {', '.join(names)}")
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 119
    doc = yaml.load(Path(params_path).read_text())
    merge(doc, yaml.load(source.read_text()))  # round-trip types keep each value's spelling (1.0e-5 stays a float)
    out = io.StringIO()
    yaml.dump(doc, out)
    text = out.getvalue()
    parse_params(pyyaml.safe_load(text), f"{params_path} with profile {name}")  # as load_params will read it
    return text


def run(args: argparse.Namespace) -> int:
    text = apply_profile(args.name, args.params)
    if args.dry_run:
        print(text)
        return 0
    Path(args.params).write_text(text)
    print(f"params: applied profile {args.name!r} to {args.params} (undo: git checkout {args.params})")
    return 0
