"""Runs the workflows with ``import monai`` blocked; prints a JSON summary. Started by test_without_monai.py."""

from __future__ import annotations

import importlib.abc
import json
import sys
from typing import Any


class _BlockMonai(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname == "monai" or fullname.startswith("monai."):
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked by the test)", name=fullname)
        return None


sys.meta_path.insert(0, _BlockMonai())

import torch  # noqa: E402
from ignite.engine import Events  # noqa: E402
from ignite.metrics import Accuracy  # noqa: E402

import hotloop.workflows as wf  # noqa: E402

torch.set_num_threads(1)  # tiny networks: a second thread only adds contention
torch.manual_seed(0)
net = torch.nn.Linear(4, 3)
opt = torch.optim.SGD(net.parameters(), lr=0.1)
data = [{"image": torch.rand(2, 4), "label": torch.tensor([0, 2])} for _ in range(3)]
events: list[tuple[str, int, int]] = []


def record(engine: Any, name: str) -> None:
    events.append((name, engine.state.epoch, engine.state.iteration))


def argmax_post(sample: dict) -> dict:
    sample["pred"] = sample["pred"].argmax(0)
    return sample


def one_hot_and_label(out: list) -> tuple:
    # per-sample dicts after decollation: "pred" a 0-d class index, "label" a Python int
    pred = torch.stack([o["pred"] for o in out])
    return torch.nn.functional.one_hot(pred, 3).float(), torch.tensor([o["label"] for o in out])


evaluator = wf.SupervisedEvaluator(
    "cpu",
    data,
    net,
    postprocessing=argmax_post,
    key_val_metric={"acc": Accuracy(output_transform=one_hot_and_label)},
)
for ev in (wf.IterationEvents.FORWARD_COMPLETED, wf.IterationEvents.MODEL_COMPLETED, Events.ITERATION_COMPLETED):
    evaluator.add_event_handler(ev, record, ev.name)
evaluator.run(global_epoch=2)
expected_pred = [net(b["image"]).argmax(1).tolist() for b in data][-1]

trainer = wf.SupervisedTrainer("cpu", 2, data, net, opt, torch.nn.CrossEntropyLoss(), decollate=False)
trainer.add_event_handler(wf.IterationEvents.LOSS_COMPLETED, record, "LOSS_COMPLETED")
trainer.run()

ensemble = wf.EnsembleEvaluator("cpu", data, [net, net], pred_keys=["a", "b"], decollate=False)
ensemble.run()

print(
    json.dumps(
        {
            "has_monai": wf.HAS_MONAI,
            "monai_imported": any(m == "monai" or m.startswith("monai.") for m in sys.modules),
            "iteration_events_module": wf.IterationEvents.__module__,
            "inferer": type(evaluator.inferer).__module__,
            "events": events,
            "eval_pred": [int(o["pred"]) for o in evaluator.state.output],
            "expected_pred": expected_pred,
            "eval_metrics": evaluator.state.metrics,
            "best": [evaluator.state.best_metric, evaluator.state.best_metric_epoch],
            "train_state": [trainer.state.epoch, trainer.state.iteration, sorted(trainer.state.output)],
            "ensemble_equal": bool(torch.equal(ensemble.state.output["a"], ensemble.state.output["b"])),
        }
    )
)
