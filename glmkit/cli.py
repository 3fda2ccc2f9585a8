"""Command line: ``glmkit run``, ``glmkit batch``, ``glmkit summary`` (also ``python -m glmkit``).

Every :class:`~glmkit.settings.RunSettings` field is a ``--flag`` of ``run`` and
``summary`` (``--n-perm`` and ``--n_perm`` both work); values are validated by
``RunSettings`` before anything runs. Precedence: defaults < ``--params`` file < flags.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
from typing import Any

from glmkit._version import __version__
from glmkit.errors import DataFileNotFoundError, GlmkitError, ParameterError

__all__ = ["build_parser", "cli_text", "entry", "main"]

def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per run parameter, with the help text and default its field declares
    (the statistics listed are those registered when the parser is built)."""
    from glmkit.settings import parameters

    group = parser.add_argument_group("analysis parameters (see glmkit.RunSettings)")
    for parameter in parameters():
        if not parameter.flag:
            continue
        name = parameter.name
        flags = [f"--{name.replace('_', '-')}"]
        if "_" in name:
            flags.append(f"--{name}")
        if parameter.kind == "bool":
            extra: dict[str, Any] = {"nargs": "?", "const": "true", "metavar": "BOOL"}
        else:
            extra = {"metavar": parameter.kind.rstrip("?").upper().replace("FLOATS3", "X,Y,Z")}
        text = f"{parameter.help} (default: {parameter.default_text})"
        group.add_argument(*flags, dest=name, default=argparse.SUPPRESS,
                           help=text.replace("%", "%%"), **extra)


def build_parser() -> argparse.ArgumentParser:
    """The ``glmkit`` argument parser (subcommands run, batch, summary)."""
    parser = argparse.ArgumentParser(
        prog="glmkit",
        description="Second-level fMRI GLMs and permutation inference with shareable reports.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"glmkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run", allow_abbrev=False,
        help="run the analysis notebook into reports/<run-name>/",
        description="Execute the analysis notebook with papermill and write "
                    "reports/<run-name>/ (report.html, notebook.ipynb, maps/, ...) atomically.")
    run.add_argument("--params", metavar="FILE.yaml", help="YAML file of parameters")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--wait", action="store_true",
                     help="when a run of the same name is going, wait for it to finish "
                          "(default: refuse at once, naming it)")
    _add_settings_flags(run)

    summary = sub.add_parser(
        "summary", aliases=["info"], allow_abbrev=False,
        help="print the dataset/QC/design summary (no model fit, no notebook)")
    summary.add_argument("--params", metavar="FILE.yaml", help="YAML file of parameters")
    _add_settings_flags(summary)

    batch = sub.add_parser(
        "batch", allow_abbrev=False, help="run a grid of parameter sets and write index.html",
        description="Run every parameter set of GRID.yaml (base parameters + 'grid:' of lists "
                    "or 'runs:' list), one report each, and write <reports_dir>/index.html.",
        epilog="example GRID.yaml:\n  n_perm: 1000\n  run_name: sweep\n  grid:\n"
               "    smoothing_fwhm: [0, 5, 8]\n    covariates: [[pseudo], [pseudo, age]]\n"
               "-> runs sweep-smoothing_fwhm=0_covariates=pseudo, ... (6 runs)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    batch.add_argument("grid", metavar="GRID.yaml")
    batch.add_argument("--force", action="store_true", help="redo complete runs too")
    batch.add_argument("--n-jobs", "--n_jobs", dest="n_jobs", type=int, default=1,
                       help="runs in parallel (joblib; -1 = all cores; default 1)")
    batch.add_argument("--yes", action="store_true",
                       help="start the runs even when there are more than 50 to do")
    batch.add_argument("--wait", action="store_true",
                       help="wait for runs of the same name that are going (default: list "
                            "them as failed)")
    return parser


def _extras_to_mapping(extras: list[str]) -> dict[str, str]:
    """``['--bogus', '1', '--x=2']`` -> ``{'bogus': '1', 'x': '2'}`` (for a clear error)."""
    out: dict[str, str] = {}
    tokens = list(extras)
    while tokens:
        token = tokens.pop(0)
        if not token.startswith("--"):
            raise ParameterError(f"unexpected argument {token!r}: parameters are given as "
                                 "--name value (see glmkit run --help)")
        name, sep, value = token[2:].partition("=")
        if not sep:
            value = tokens.pop(0) if tokens and not tokens[0].startswith("--") else "true"
        out[name] = value
    return out


def _settings_from_args(args: argparse.Namespace, extras: list[str]):
    from glmkit.settings import RunSettings, read_params_file

    mapping: dict[str, Any] = {}
    if args.params:
        mapping.update(read_params_file(args.params))
    flags = {k: v for k, v in vars(args).items()
             if k not in ("command", "params", "quiet", "grid", "wait", "yes")}
    mapping.update(flags)
    mapping.update(_extras_to_mapping(extras))
    return RunSettings.from_mapping(mapping)


class _CliFormatter(logging.Formatter):
    """Log records in command-line terms (:func:`cli_text`)."""

    def format(self, record: logging.LogRecord) -> str:
        return cli_text(super().format(record))


class _StderrHandler(logging.StreamHandler):
    """Write to whatever ``sys.stderr`` is when a record is emitted (never a stale stream)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(_CliFormatter("glmkit: %(message)s"))

    @property  # type: ignore[override]
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; ignore
        pass


@contextlib.contextmanager
def _cli_logging():
    """Show glmkit's INFO messages on stderr while the command runs, then restore the logger.

    The command may be called in-process (tests, notebooks): the handler and level must not
    outlive it, or later library calls would keep printing.
    """
    logger = logging.getLogger("glmkit")
    if logger.handlers:  # the caller configured logging; leave it alone
        yield
        return
    handler, level = _StderrHandler(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``glmkit`` command; returns the exit status."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if args.command is None:
        if extras:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
        parser.print_help()
        return 0
    if args.command == "batch" and extras:
        parser.error(f"unrecognized arguments for batch: {' '.join(extras)} (parameters go "
                     "in the batch file)")
    with _cli_logging():
        return _dispatch(args, extras)


def _dispatch(args: argparse.Namespace, extras: list[str]) -> int:
    try:
        if args.command == "run":
            from glmkit.run import run_notebook

            settings = _settings_from_args(args, extras)
            report = run_notebook(settings, progress_bar=not args.quiet, wait=args.wait)
            print(f"report: {report}")
        elif args.command in ("summary", "info"):
            from glmkit.pipeline import preview

            print(preview(_settings_from_args(args, extras)))
        elif args.command == "batch":
            from glmkit.run import run_batch

            index = run_batch(args.grid, force=args.force, n_jobs=args.n_jobs, yes=args.yes,
                              wait=args.wait)
            print(f"index: {index}")
    except GlmkitError as exc:
        return _error_exit(args.command, exc)
    except KeyboardInterrupt as exc:
        from glmkit.run import RunInterrupted

        said = str(exc) if isinstance(exc, RunInterrupted) else "nothing was written"
        print(f"glmkit {args.command}: interrupted; {cli_text(said)}", file=sys.stderr)
        return 130
    return 0


# ------------------------------------------------------------------ messages in CLI terms
#: options of the commands themselves (not run parameters) that messages may name
_COMMAND_OPTIONS = ("force", "wait", "yes", "n_jobs", "params", "quiet")
_MENTION = re.compile(r"(?<![\w.\-,\[{'\"])(?<!\w\()(?P<name>[a-z][a-z0-9_]*)=")


def cli_text(message: str) -> str:
    """A message in command-line terms: each ``name=value`` mention of a run parameter or a
    command option becomes ``--name value`` (``force=True`` -> ``--force``,
    ``covariates=['age', 'score']`` -> ``--covariates age,score``, ``qc={'keep': ['S1']}``
    -> ``--qc '{keep: [S1]}'``). Messages name parameters as ``name=value``, the form
    Python users type; arguments of a call (``QCPolicy(on_grid_mismatch=...)``, after
    ``name(`` or ``,``) are code and stay.

    Examples
    --------
    >>> cli_text("pass on_missing='drop' to drop them, or force=True")
    'pass --on-missing drop to drop them, or --force'
    >>> cli_text("alpha=2.0 is out of range; e.g. contrast='score - age' or contrast=[1, 0]")
    "--alpha 2.0 is out of range; e.g. --contrast 'score - age' or --contrast '[1, 0]'"
    >>> cli_text("mask_img= is an argument of run_qc(mask_img=...)")
    'mask_img= is an argument of run_qc(mask_img=...)'
    """
    from glmkit.settings import RunSettings

    names = set(RunSettings.field_names()) | set(_COMMAND_OPTIONS)
    out, pos = [], 0
    for match in _MENTION.finditer(message):
        if match.start() < pos or match["name"] not in names:
            continue
        value, end = _value_at(message, match.end())
        out += [message[pos:match.start()], _as_flag(match["name"], value)]
        pos = end
    return "".join(out) + message[pos:]


def _value_at(text: str, start: int) -> tuple[str, int]:
    """The value written after ``name=`` at ``start``: a quoted string, a bracketed literal
    (``[...]``, ``{...}``, ``<...>``), ``...``, or a bare token (trailing punctuation left)."""
    closing = {"[": "]", "{": "}", "<": ">"}
    if start < len(text) and text[start] in "'\"":
        end = text.find(text[start], start + 1)
        return (text[start:end + 1], end + 1) if end > 0 else (text[start:], len(text))
    if start < len(text) and text[start] in closing:
        depth, i = 0, start
        while i < len(text):
            depth += text[i] == text[start]
            depth -= text[i] == closing[text[start]]
            i += 1
            if depth == 0:
                return text[start:i], i
        return text[start:], len(text)
    if text.startswith("...", start):
        return "...", start + 3
    token = re.match(r"[^\s,;)]*", text[start:])[0]
    token = token.rstrip(".:") if token not in ("...",) else token
    return token, start + len(token)


def _as_flag(name: str, value: str) -> str:
    import ast
    import shlex

    flag = f"--{name.replace('_', '-')}"
    if value in ("", "True"):
        return flag
    if value in ("False", "None"):
        return f"{flag} {value.lower()}"
    if value == "..." or value.startswith("<"):
        return f"{flag} {value}"
    try:
        literal = ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return f"{flag} {value}"
    if isinstance(literal, (list, tuple)) and literal and all(
            isinstance(v, str) and "," not in v for v in literal):
        text = ",".join(literal)
    elif isinstance(literal, (list, tuple, dict)):
        import yaml

        text = yaml.safe_dump(literal, default_flow_style=True, width=10**6).strip()
    else:
        text = str(literal)
    if any(ord(ch) < 32 for ch in text):  # a newline or tab, shown escaped on one line
        return f"{flag} {text!r}"
    return f"{flag} {shlex.quote(text)}"


def _error_exit(command: str, exc: GlmkitError) -> int:
    """Print a GlmkitError in command-line terms; the exit status is 2 for a bad parameter or
    a missing input (a usage error), 1 for the rest."""
    print(f"glmkit {command}: error: {cli_text(str(exc))}", file=sys.stderr)
    return 2 if isinstance(exc, (ParameterError, DataFileNotFoundError)) else 1


def entry() -> None:
    """The console script (``glmkit``, ``python -m glmkit``): exit with :func:`main`'s status.

    After an interrupt (status 130) the process exits at once, once the run's kernel is stopped
    and its temporary folder removed: sockets or threads left behind by the interrupted
    notebook client must not hold the terminal.
    """
    code = main()
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
