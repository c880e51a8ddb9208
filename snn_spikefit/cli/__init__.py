"""The ``spikefit`` command line.

Each command lives in its own module with ``add_parser(subparsers)`` and
``main(args) -> int``; :data:`COMMANDS` lists them. Exit codes: 0 success,
1 a check found violations, 2 bad usage or input (one line, no traceback).
"""

from __future__ import annotations

import argparse
import importlib
import sys

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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module in COMMANDS.items():
        importlib.import_module(f"{__name__}.{module}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import torch

    # Leaky membranes decay into denormal floats, which slow CPU training many-fold;
    # flushing them changes no result a spiking threshold can see.
    torch.set_flush_denormal(True)
    try:
        return int(args.handler(args) or 0)
    except (SpikeFitError, OSError) as exc:  # bad input or files: one line, no traceback
        message = " ".join(str(exc).split())  # multi-line messages (a list of violations) on one line
        print(f"spikefit {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spikefit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
