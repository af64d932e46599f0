"""The workflows import and run with ``import monai`` blocked (a subprocess with a blocking import hook)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_WORKER = Path(__file__).with_name("_no_monai_worker.py")


def test_workflows_run_without_monai() -> None:
    done = subprocess.run([sys.executable, str(_WORKER)], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["has_monai"] is False
    assert out["monai_imported"] is False
    assert out["iteration_events_module"] == "hotloop.workflows.utils"
    assert out["inferer"] == "hotloop.workflows._monai"
    # epoch 2 (global_epoch=2), 3 iterations; per iteration: FORWARD, MODEL, ITERATION_COMPLETED; then the trainer.
    expected = [
        (name, 2, i) for i in (1, 2, 3) for name in ("FORWARD_COMPLETED", "MODEL_COMPLETED", "ITERATION_COMPLETED")
    ]
    expected += [("LOSS_COMPLETED", e, i) for e in (1, 2) for i in range(3 * e - 2, 3 * e + 1)]
    assert [tuple(e) for e in out["events"]] == expected
    assert out["eval_pred"] == out["expected_pred"]
    assert 0.0 <= out["eval_metrics"]["acc"] <= 1.0
    assert out["best"] == [out["eval_metrics"]["acc"], 2]
    assert out["train_state"] == [2, 6, ["image", "label", "loss", "pred"]]
    assert out["ensemble_equal"] is True
