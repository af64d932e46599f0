"""The ``hotloop`` command: ``hotloop demo`` and ``hotloop bench`` (also ``python -m hotloop``).

Bad options fail with one line on stderr (``hotloop demo: error: ...``) and exit code 2; a run that fails on its
input (an unreadable image, a missing optional dependency) prints one line and exits with 1. Tracebacks are kept for
bugs.

Examples:
    .. code-block:: bash

        hotloop demo                      # train + evaluate a CNN on scikit-learn's digits, hotloop vs Ignite
        hotloop bench --quick             # side-by-side benchmark: Markdown table, results.json, PNG charts
        hotloop demo --help
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

import hotloop
from hotloop import demo
from hotloop._third_party import quiet_third_party_logs
from hotloop.bench import compare

__all__ = ["build_parser", "main"]

_DESCRIPTION = (
    "hotloop: PyTorch-Ignite's and MONAI's training and evaluation API on a loop that costs what a bare loop costs."
)
_EPILOG = """examples:
  hotloop demo            train and evaluate a small CNN on scikit-learn's digits with hotloop and with Ignite
  hotloop bench --quick   run the side-by-side benchmark and write results.json and PNG charts

'hotloop COMMAND --help' lists a command's options."""

_DEMO_EPILOG = """examples:
  hotloop demo                                  digits, 5 epochs, on CUDA when available
  hotloop demo --epochs 1 --device cpu          a quick pass
  hotloop demo --data DIR --image-size 64       DIR/train/<class>/*.png and DIR/val/<class>/*.png

Per epoch it prints the validation accuracy and loss and the training samples/s; at the end a report with the
accuracy and samples/s of hotloop and of Ignite's stock create_supervised_trainer (same model, data and seed; the
two alternate epoch by epoch), and hotloop ÷ Ignite as the median of the per-epoch ratios with their range.
Checkpoints of the two best epochs go to OUTPUT/checkpoints."""

_BENCH_EPILOG = """examples:
  hotloop bench --quick                         every case, fewer iterations and rounds
  hotloop bench --only engine_overhead          one case (or a scenario: no_handlers, engine_overhead/handlers)
  hotloop bench --check                         exit with 1 when a scenario misses its target

It prints a summary, one row per scenario (the original's and hotloop's cost per iteration over the scenario's
baseline, their ratio, the target and the verdict), and writes every provider's figures to OUTPUT/results.md,
the same numbers to OUTPUT/results.json, and the charts OUTPUT/us_per_iter.png (one panel per case) and
OUTPUT/ratios.png. A case whose packages are missing is skipped, and the output says which and why."""

# Errors a run can meet on its input: reported in one line, exit code 1.
_RUN_ERRORS = (OSError, ValueError, ModuleNotFoundError)


class _Parser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one line on stderr (exit code 2), pointing at ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``hotloop`` parser with its ``demo`` and ``bench`` subcommands.

    Returns:
        The parser; each subcommand's namespace carries ``run`` (the function that runs it) and ``parser``.
    """
    parser = _Parser(
        prog="hotloop", description=_DESCRIPTION, epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"hotloop {hotloop.__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND", required=True)
    demo_parser = commands.add_parser(
        "demo",
        help="train and evaluate a CNN on scikit-learn's digits with hotloop, then with Ignite, and compare",
        description="Trains and evaluates a small CNN on scikit-learn's digits (or an image folder) with hotloop's "
        "trainer and evaluator and, alternating epoch by epoch, the same run on Ignite's stock trainer, and reports "
        "both.",
        epilog=_DEMO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(run=_run_demo, parser=demo_parser)
    bench_parser = commands.add_parser(
        "bench",
        help="side-by-side benchmark of a bare loop, the original library and hotloop",
        description="Side-by-side benchmark: every case runs a bare loop, the original (Ignite, MONAI) and hotloop "
        "interleaved in one process, and reports medians and overhead ratios.",
        epilog=_BENCH_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_arguments(bench_parser)
    bench_parser.set_defaults(run=_run_bench, parser=bench_parser)
    return parser


def _run_demo(args: argparse.Namespace) -> int:
    try:
        config = demo.config_from_args(args)
        demo.resolve_device(config.device)
    except ValueError as error:
        args.parser.error(str(error))  # a usage error: argparse's one line, exit code 2
    demo.run_demo(config)
    return 0


def _run_bench(args: argparse.Namespace) -> int:
    return compare.run(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``hotloop COMMAND [options]``.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The exit code: 0 on success, 1 when the run failed on its input, 130 when interrupted (bad options exit with
        2 through :class:`SystemExit`, as argparse does).

    Examples:
        .. code-block:: python

            from hotloop.cli import main

            main(["demo", "--epochs", "1", "--no-compare", "--output", "demo-out"])
    """
    args, extra = build_parser().parse_known_args(argv)
    if extra:  # reported by the subcommand's parser, whose usage they belong to
        args.parser.error(f"unrecognized arguments: {' '.join(extra)}")
    quiet_third_party_logs()
    try:
        return args.run(args)
    except _RUN_ERRORS as error:
        print(f"hotloop {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"hotloop {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
