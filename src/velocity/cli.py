"""The ``velocity`` command line.

::

    velocity [-v] strategies [--json]   list every registered strategy stage
    velocity [-v] version               print the installed version

Exit codes: ``0`` success, ``2`` usage or configuration error, ``1`` any other failure.
See ``docs/cli.md``. The module imports only the standard library at import time; each
command imports what it needs, so ``velocity --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

__all__ = ["EXIT_CONFIG", "EXIT_ERROR", "EXIT_OK", "build_parser", "main"]

#: The command succeeded.
EXIT_OK = 0
#: A runtime failure (anything that is not a usage or configuration error).
EXIT_ERROR = 1
#: Bad command line (argparse's own code) or a :class:`velocity.errors.ConfigurationError`.
EXIT_CONFIG = 2

_PROG = "velocity"
_DISTRIBUTION = "velocityfl"


# ---------------------------------------------------------------------- commands


def _format_parameters(parameters: Any) -> str:
    """Render a strategy's parameters (mapping, list or text) as one short line."""
    if parameters is None:
        return ""
    if isinstance(parameters, str):
        return parameters
    if isinstance(parameters, Mapping):
        return ", ".join(f"{name}={_format_default(value)}" for name, value in parameters.items())
    if isinstance(parameters, Sequence):
        parts = []
        for item in parameters:
            if isinstance(item, Mapping) and "name" in item:
                text = str(item["name"])
                if "default" in item and not item.get("required", False):
                    text += f"={_format_default(item['default'])}"
                parts.append(text)
            else:
                parts.append(str(item))
        return ", ".join(parts)
    return str(parameters)


def _format_default(value: Any) -> str:
    if isinstance(value, Mapping) and "default" in value:
        return _format_default(value["default"])
    return repr(value) if isinstance(value, str) else str(value)


def _json_default(value: object) -> object:
    """Fallback for ``json.dumps``: anything unusual becomes its string form."""
    return str(value)


def _cmd_strategies(args: argparse.Namespace, out: TextIO) -> int:
    from velocity.strategies import describe_strategies

    rows = list(describe_strategies())
    if args.json:
        out.write(json.dumps(rows, indent=2, default=_json_default) + "\n")
        return EXIT_OK

    from rich.console import Console
    from rich.table import Table

    table = Table(title="VelocityFL strategies", title_justify="left")
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("parameters")
    table.add_column("summary")
    for row in rows:
        table.add_row(
            str(row.get("name", "")),
            str(row.get("kind", "")),
            _format_parameters(row.get("parameters")),
            str(row.get("summary", "")).replace("``", ""),
        )
    # A pipe or a captured stream has no width; rich would assume 80 columns.
    wide = out.isatty() or "COLUMNS" in os.environ
    Console(file=out, width=None if wide else 160, soft_wrap=False).print(table)
    print("Parameters without a default are required.", file=out)
    return EXIT_OK


def _cmd_version(args: argparse.Namespace, out: TextIO) -> int:
    out.write(f"{_PROG} {_package_version()}\n")
    if args.verbose:
        import platform

        import numpy
        import torch

        out.write(f"python {platform.python_version()}\n")
        out.write(f"torch {torch.__version__}\n")
        out.write(f"numpy {numpy.__version__}\n")
    return EXIT_OK


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(_DISTRIBUTION)
    except PackageNotFoundError:  # running from a source tree without installing
        return "0+unknown"


# ---------------------------------------------------------------------- parser

_Command = Callable[[argparse.Namespace, TextIO], int]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation tools and tests)."""
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="VelocityFL: fast, robust, reproducible federated learning.",
        epilog="Exit codes: 0 success, 1 runtime error, 2 usage or configuration error.",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="more output; show full tracebacks on errors",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    strategies = commands.add_parser(
        "strategies",
        help="list the available aggregation strategies and stages",
        description="List every registered strategy stage: name, kind, parameters, summary.",
    )
    strategies.add_argument("--json", action="store_true", help="print JSON instead of a table")
    strategies.set_defaults(handler=_cmd_strategies)

    version = commands.add_parser(
        "version",
        help="print the installed version",
        description="Print the installed VelocityFL version (with -v: python, torch, numpy).",
    )
    version.set_defaults(handler=_cmd_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``velocity`` command line; return the exit code.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; ``sys.argv[1:]`` when omitted.

    Returns
    -------
    int
        ``0`` success, ``1`` runtime error, ``2`` usage or configuration error.

    Examples
    --------
    >>> main(["version"])  # doctest: +ELLIPSIS
    velocity ...
    0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exit_:  # argparse exits on --help (0) and on usage errors (2)
        code = exit_.code
        return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_CONFIG)

    handler: _Command = args.handler
    try:
        return handler(args, sys.stdout)
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        return _report(error, verbose=args.verbose)


def _report(error: Exception, *, verbose: bool) -> int:
    """Print ``error`` as one line on stderr (plus the traceback when verbose)."""
    from velocity.errors import ConfigurationError, VelocityError

    if verbose:
        traceback.print_exc(file=sys.stderr)
    message = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, ConfigurationError):
        print(f"{_PROG}: configuration error: {message}", file=sys.stderr)
        return EXIT_CONFIG
    if not isinstance(error, VelocityError):
        message = f"{type(error).__name__}: {message}"
    hint = "" if verbose else " (run with -v for the traceback)"
    print(f"{_PROG}: error: {message}{hint}", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
