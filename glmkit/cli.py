"""Command line: ``glmkit run``, ``glmkit batch`` (also ``python -m glmkit``)."""

from __future__ import annotations

import argparse
import sys

from glmkit._version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="glmkit",
        description="Second-level fMRI GLMs and permutation inference with shareable reports.",
    )
    parser.add_argument("--version", action="version", version=f"glmkit {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
