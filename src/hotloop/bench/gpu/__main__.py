"""``python -m hotloop.bench.gpu PART``: see :mod:`hotloop.bench.gpu`."""

import sys

from hotloop.bench.gpu import main

if __name__ == "__main__":  # importing it (pkgutil.walk_packages in tests/test_packaging.py) runs nothing
    sys.exit(main())
