"""``python -m hotloop.bench.gpu PART``: see :mod:`hotloop.bench.gpu`."""

import sys

from hotloop.bench.gpu import main

sys.exit(main())
