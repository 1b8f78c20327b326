"""Command-line interface: ``python -m ppgn_core {sample,inpaint,layers,presets,evaluate,bench,train,
train-prior,add-prior,prior-report,export,add-dae,convert-caffe}``.

Each group of commands lives in :mod:`ppgn_core.commands` (``sampling``, ``evaluation``, ``training``,
``prior``, ``shipping``): it adds its sub-parsers and names the function that runs each.
"""

from __future__ import annotations

import argparse
import sys

from .commands.common import set_condition_size  # noqa: F401 (used by scripts)

GROUPS = ("sampling", "chains", "evaluation", "training", "prior", "shipping")


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    """The parser and {command: handler}."""
    import importlib

    parser = argparse.ArgumentParser(prog="python -m ppgn_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    handlers: dict = {}
    for group in GROUPS:
        handlers.update(importlib.import_module(f".commands.{group}", __package__).add_parsers(sub))
    return parser, handlers


def main(argv: list[str] | None = None) -> int:
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    try:
        return handlers[args.command](args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
