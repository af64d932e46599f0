"""Kept for ``python benchmarks/compare.py``: the comparison script lives in :mod:`hotloop.bench.compare`."""

import sys

from hotloop.bench.compare import main

if __name__ == "__main__":
    sys.exit(main())
