"""`treegrpo promote`: move alias champion to a registered version if it beats the champion (the first: the base
model) on the primary reward, or with --force --reason."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "promote",
        help="move alias champion to the candidate if it beats the champion on tracking.primary_reward",
        description="Compare a registered version (default: alias candidate) with the current champion on "
        "tracking.primary_reward (the trained model's evaluation mean, same eval set) and move alias `champion` to "
        "it only if it is better by more than tracking.min_improvement; with no champion yet, the version must beat "
        "the base model's mean in the same evaluation. --force --reason TEXT promotes anyway. The "
        "decision is recorded as version tags (promoted_at, promotion_reason, promotion_forced, previous_champion). "
        "Exit status: 0 promoted (or already champion), 1 refused.",
    )
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--version", help="the version to promote (default: the one with alias candidate)")
    p.add_argument("--force", action="store_true", help="promote even if the gate refuses (needs --reason)")
    p.add_argument("--reason", help="why (recorded as the tag promotion_reason); required with --force")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from treegrpo.config import load_params
    from treegrpo.recipes.registry import promote
    from treegrpo.training.tracking import get_client

    params = load_params(args.params)
    decision = promote(get_client(params.tracking), params, args.version, args.force, args.reason)
    print(f"{params.tracking.model_name}: {decision.message}")
    return 0 if decision.promoted or decision.previous == decision.version else 1
