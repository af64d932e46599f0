"""``hotloop.step.steps``: Ignite's supervised steps on the step builder (the factories' differential tests against
Ignite are in ``tests/test_supervised.py``)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from ignite.engine import _prepare_batch, supervised_training_step

from hotloop.step import StepOptions, build_eval_step, build_train_step
from hotloop.step.steps import call_model, identity, loss_detached, loss_item, pred_and_target, train_output


class _State:
    def __init__(self) -> None:
        self.iteration = 0


class _Engine:
    def __init__(self) -> None:
        self.state = _State()


def _model_opt() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def _train_step(model: Any, opt: Any, **kwargs: Any) -> Any:
    args: dict[str, Any] = {
        "device": None,
        "non_blocking": False,
        "prepare_batch": _prepare_batch,
        "model_transform": identity,
        "output_transform": loss_item,
        "gradient_accumulation_steps": 1,
        "model_fn": call_model,
    }
    args.update(kwargs)
    return build_train_step(model, opt, torch.nn.functional.mse_loss, **args)


def _run(update: Any, batches: list) -> list[Any]:
    engine, outputs = _Engine(), []
    for batch in batches:
        engine.state.iteration += 1
        outputs.append(update(engine, batch))
    return outputs


@pytest.mark.parametrize(
    ("batch", "error", "match"),
    [
        ({"x": torch.ones(1, 3), "y": torch.ones(1, 2)}, TypeError, r"got a dict with keys \['x', 'y'\]"),
        ((torch.ones(1, 3), torch.ones(1, 2), 1), ValueError, "got a tuple of 3"),
    ],
)
def test_the_default_prepare_batch_names_what_to_pass(batch: Any, error: type, match: str) -> None:
    update = _train_step(*_model_opt())
    with pytest.raises(error, match=match):
        _run(update, [batch])


def test_the_accumulation_steps_are_checked_as_ignite_checks_them() -> None:
    with pytest.raises(ValueError, match="Gradient_accumulation_steps must be strictly positive"):
        _train_step(*_model_opt(), gradient_accumulation_steps=0)


def test_the_output_and_the_training_are_ignites_bit_for_bit() -> None:
    batches = [(torch.randn(4, 3), torch.randn(4, 2)) for _ in range(5)]
    outputs = {}
    for name in ("ignite", "hotloop"):
        model, opt = _model_opt()
        seen: list = []
        keep = lambda x, y, y_pred, loss, seen=seen: seen.append(loss)  # noqa: E731
        if name == "ignite":
            update = supervised_training_step(
                model, opt, torch.nn.functional.mse_loss, output_transform=keep, gradient_accumulation_steps=2
            )
        else:
            update = _train_step(model, opt, gradient_accumulation_steps=2, output_transform=keep)
        _run(update, batches)
        outputs[name] = (seen, list(model.parameters()))
    for got, expected in zip(outputs["hotloop"][0], outputs["ignite"][0]):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)  # the divided loss times the steps, as Ignite
    for got, expected in zip(outputs["hotloop"][1], outputs["ignite"][1]):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_no_sync_changes_only_the_default_output() -> None:
    assert train_output(loss_item, StepOptions(no_sync=True)) is loss_detached
    assert train_output(loss_item, StepOptions()) is loss_item
    mine = lambda x, y, p, loss: loss  # noqa: E731
    assert train_output(mine, StepOptions(no_sync=True)) is mine
    outputs = _run(_train_step(*_model_opt(), output_transform=loss_detached), [(torch.ones(2, 3), torch.ones(2, 2))])
    assert isinstance(outputs[0], torch.Tensor) and not outputs[0].requires_grad


def test_eval_step_runs_the_model_in_eval_mode_without_gradients() -> None:
    model, _ = _model_opt()
    model.train()
    update = build_eval_step(
        model,
        device=None,
        non_blocking=False,
        prepare_batch=_prepare_batch,
        model_transform=identity,
        output_transform=pred_and_target,
        model_fn=call_model,
        options=StepOptions(compile={"backend": "eager"}),
    )
    x, y = torch.randn(3, 3), torch.randn(3, 2)
    y_pred, target = update(_Engine(), (x, y))
    assert not model.training and not y_pred.requires_grad and target is y
    torch.testing.assert_close(y_pred, model(x).detach())
