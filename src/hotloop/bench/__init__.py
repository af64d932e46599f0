"""hotloop's side-by-side benchmark suite: every case compares ``raw``, the original library and hotloop in one run.

Run it with ``hotloop bench`` (or ``./dev bench``, or ``python -m hotloop.bench.compare``); see
:mod:`hotloop.bench.compare` for the options and :mod:`hotloop.bench.cases` for the registry of cases.
"""

__all__: list[str] = []
