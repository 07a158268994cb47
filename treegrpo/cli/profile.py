"""`treegrpo profile NAME`: apply a shipped profile (profiles/NAME.yaml) to params.yaml, validated first.

A profile is an overlay: it lists only the keys that differ from the embedded default. Applying it rewrites only the
lines of the values it changes (`treegrpo.config.edit`, the writer the flow's overrides use too), so `git diff
params.yaml` shows those values and nothing else; a changed line's comment (which described the old value) is
replaced by the profile's comment on that key, or dropped. `git checkout params.yaml` returns to the embedded default.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from treegrpo.config import ParamsError, parse_params, read_yaml
from treegrpo.config.edit import overlay_changes, parse_entries, section_paths, set_values
from treegrpo.utils.errors import UserError

PROFILES = Path(__file__).resolve().parents[2] / "profiles"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "profile",
        help="apply a shipped profile to params.yaml (paper: SD3.5-Medium at the paper's settings)",
        description="Write the values of profiles/NAME.yaml (only the keys it changes) into params.yaml, after "
        "validating the result: only the lines of changed values are rewritten (their old comments replaced by the "
        "profile's, or dropped), so `git diff params.yaml` shows just those. Undo with `git checkout params.yaml`.",
    )
    p.add_argument("name", help="profile name: a file profiles/NAME.yaml (shipped: paper)")
    p.add_argument("--params", default="params.yaml", help="the file to change (default: params.yaml)")
    p.add_argument("--dry-run", action="store_true", help="validate and print the result, change nothing")
    p.set_defaults(func=run)


def apply_profile(name: str, params_path: str | Path) -> str:
    """params.yaml's text with profile `name`'s values written in, validated; raises UserError if it can't be."""
    source = PROFILES / f"{name}.yaml"
    if not source.is_file():
        names = sorted(p.stem for p in PROFILES.glob("*.yaml"))
        raise UserError(f"profile {name!r}: no {source}; shipped profiles: {', '.join(names)}")
    text = Path(params_path).read_text()
    changes = overlay_changes(source.read_text(), section_paths(), str(source))
    known = parse_entries(text)
    for dotted in changes:
        if dotted not in known:
            raise UserError(f"profile key {dotted} is not in {params_path}; fix the profile")
    try:
        out = set_values(text, changes, str(params_path))
    except ParamsError as err:
        raise UserError(f"profile {name}: {err}") from None
    parse_params(read_yaml(out), f"{params_path} with profile {name}")  # as load_params will read it
    return out


def run(args: argparse.Namespace) -> int:
    text = apply_profile(args.name, args.params)
    if args.dry_run:
        print(text)
        return 0
    Path(args.params).write_text(text)
    print(f"params: applied profile {args.name!r} to {args.params} (undo: git checkout {args.params})")
    return 0
