"""The ``spikefit`` command line.

Each command lives in its own module with ``add_parser(subparsers)`` and
``main(args) -> int``; :data:`COMMANDS` lists them. Exit codes: 0 success,
1 a check found violations, 2 any other failure: bad usage or input, a file
refused, a user function that raised, even a bug (one line on stderr,
``spikefit: error: ...``; ``--debug`` adds the traceback; with ``--json`` a JSON
object ``{"error": {"command", "type", "message"}}`` is printed on stdout too).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import traceback

from ..errors import SpikeFitError

__all__ = ["main", "build_parser", "COMMANDS"]

#: subcommand -> module under snn_spikefit.cli
COMMANDS = {"demo": "demo", "compress": "compress", "evaluate": "evaluate", "check": "check",
            "profiles": "profiles", "export": "export", "verify": "verify"}


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

    parser = argparse.ArgumentParser(
        prog="spikefit",
        description="Compress spiking neural networks to fit neuromorphic chips.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="on an error, also print the Python traceback")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module in COMMANDS.items():
        importlib.import_module(f"{__name__}.{module}").add_parser(sub)
    for p in sub.choices.values():  # `spikefit check ... --debug` works as well as `spikefit --debug check ...`
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="on an error, also print the Python traceback")
    return parser


def _report_error(args: argparse.Namespace, exc: BaseException) -> int:
    """One line on stderr (traceback with --debug), a JSON error object on stdout with --json; exit 2."""
    message = " ".join(str(exc).split()) or type(exc).__name__  # a list of violations on one line
    if not isinstance(exc, (SpikeFitError, OSError)):
        message = f"{type(exc).__name__}: {message} (an unexpected error; --debug shows the traceback)"
    if getattr(args, "debug", False):
        traceback.print_exception(exc, file=sys.stderr)
    print(f"spikefit {args.command}: error: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"error": {"command": args.command, "type": type(exc).__name__, "message": message,
                                    "exit_code": 2}}))
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import torch

    # Leaky membranes decay into denormal floats, which slow CPU training many-fold;
    # flushing them changes no result a spiking threshold can see.
    torch.set_flush_denormal(True)
    try:
        return int(args.handler(args) or 0)
    except Exception as exc:  # bad input or files, a user function that raised, a bug: exit 2, never 1
        return _report_error(args, exc)
    except KeyboardInterrupt:
        print(f"spikefit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
