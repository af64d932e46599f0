"""pytest-benchmark suite of the engine's loop overhead: one benchmark per provider per scenario, grouped by scenario.

Run with ``pytest benchmarks/ --benchmark-only`` (add ``--benchmark-columns=median,iqr,rounds`` for a short table).
One round runs the scenario's full iteration count; ``extra_info["iterations"]`` turns a round's time into a
per-iteration cost. The side-by-side ratios and their targets are ``benchmarks/compare.py``'s job. Lightning's
provider is left out here: its rounds time their own epoch (the set-up of each ``fit`` is not a per-iteration cost)
over fewer iterations than the scenario's, which only ``hotloop bench`` reads.
"""

from __future__ import annotations

import pytest

from hotloop.bench.cases import device_sync
from hotloop.bench.cases.engine_overhead import SCENARIOS

_ROUNDS = 5
_WARMUP_ROUNDS = 1

_PARAMS = [
    pytest.param(scenario, provider, id=f"{scenario.name}-{provider}")
    for scenario in SCENARIOS
    for provider in scenario.providers
    if provider != "lightning"
]


@pytest.mark.parametrize(("scenario", "provider"), _PARAMS)
def test_engine_overhead(benchmark, scenario, provider):
    run = scenario.providers[provider](scenario.iterations)

    def timed_round():
        run()
        device_sync()

    benchmark.group = f"engine_overhead/{scenario.name}"
    benchmark.extra_info.update(provider=provider, iterations=scenario.iterations)
    benchmark.pedantic(timed_round, rounds=_ROUNDS, warmup_rounds=_WARMUP_ROUNDS, iterations=1)
