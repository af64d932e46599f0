"""``python -m hotloop.bench.gpu PART``: see :mod:`hotloop.bench.gpu`."""

import sys

from hotloop.bench.gpu import main

__all__: list[str] = []

if __name__ == "__main__":  # importing the module (pkgutil.walk_packages, the packaging test) runs nothing
    sys.exit(main())
