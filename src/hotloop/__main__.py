"""``python -m hotloop``: the ``hotloop`` command (see :mod:`hotloop.cli`)."""

import sys

from hotloop.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
