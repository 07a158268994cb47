"""The `treegrpo` command: one subcommand per DVC stage (and a few tools).

Each subcommand lives in its own module here with `add_parser(subparsers)`; `COMMANDS` is the explicit registry.
Errors the user can fix (bad params, missing files) print one line and exit 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from treegrpo.config import ParamsError
from treegrpo.utils.errors import UserError

# module name under treegrpo.cli, in the order the pipeline runs
COMMANDS = ["check", "build_model", "world", "pretrain", "profile", "ingest", "validate", "fetch", "train",
            "evaluate", "register", "promote", "bench"]


def quiet_loading_bars() -> None:
    """One progress display on the terminal, the command's own: not diffusers' and transformers' bars for loading
    and writing weights, nor MLflow's for moving artifacts (called by the commands that load or save models; `fetch`
    keeps the hub's download bars, which show real downloads)."""
    from diffusers.utils import logging as diffusers_logging  # here: diffusers and transformers take seconds to import
    from transformers.utils import logging as transformers_logging

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # MLflow reads it at each transfer
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="treegrpo", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"treegrpo.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ParamsError, UserError) as err:
        print(f"treegrpo {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
