"""The GPU check's measurements: one part per child process of ``./dev gpu`` (``scripts/gpu.py``, docs/gpu.md).

Each part measures one hot path on the CUDA device, or, with ``--dry-run``, runs the same code on the CPU with tiny
sizes, the fake CUDA-graph backend (:mod:`hotloop.step._fake_graphs`) and, where ``TRITON_INTERPRET=1``, the Triton
kernels interpreted on host tensors. It writes one JSON object::

    {"part": str, "device": str, "dry_run": bool,
     "checks": [{"name": str, "ok": bool, "detail": str}],   # a failed check fails ./dev gpu
     "notes": [str],                                          # hotloop's warnings (fallbacks), failed providers
     "markdown": str,                                         # the part's section of gpu-report.md
     ...}                                                     # the part's numbers

Parts: ``env`` (versions, device, native module), ``kernels`` (:mod:`.kernels`), ``evaluator`` (:mod:`.evaluator`),
``prefetch`` (:mod:`.prefetch`), ``trainer_cnn`` and ``trainer_transformer`` (:mod:`.trainer`). Timings reuse
``hotloop bench``'s machinery (:mod:`hotloop.bench.compare`): providers interleaved round by round after warm-up, the
device synced inside each timed round, medians with quartiles.

Usage::

    python -m hotloop.bench.gpu kernels --json kernels.json
    python -m hotloop.bench.gpu trainer_cnn --dry-run --json cnn.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["PARTS", "main"]

#: Part name → ``module:function`` taking a :class:`~hotloop.bench.gpu._common.Context` and returning its JSON object.
PARTS: dict[str, str] = {
    "env": "env:run",
    "kernels": "kernels:run",
    "evaluator": "evaluator:run",
    "prefetch": "prefetch:run",
    "trainer_cnn": "trainer:run_cnn",
    "trainer_transformer": "trainer:run_transformer",
}


def _part(name: str) -> Callable[[Any], dict[str, Any]]:
    module, function = PARTS[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one part and writes its JSON.

    Args:
        argv: ``PART [--dry-run] [--json PATH]``; ``None`` reads ``sys.argv``.

    Returns:
        0; an error in the part propagates (the driver reports the child's exit code and log).
    """
    parser = argparse.ArgumentParser(prog="python -m hotloop.bench.gpu", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("part", choices=list(PARTS))
    parser.add_argument("--dry-run", action="store_true", help="on the CPU: tiny sizes, fake CUDA graphs")
    parser.add_argument("--json", type=Path, help="where to write the result (default: print it)")
    args = parser.parse_args(argv)
    from hotloop.bench.gpu._common import Context

    result = _part(args.part)(Context(dry_run=args.dry_run))
    text = json.dumps(result, indent=1, default=str, allow_nan=True)
    if args.json is None:
        print(text)
    else:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
        print(result.get("markdown", ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
