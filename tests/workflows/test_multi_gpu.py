"""create_multigpu_supervised_* on the CPU (an empty device list), against a plain supervised loop."""

from __future__ import annotations

import pytest
import torch
from ignite.metrics import MeanSquaredError

from hotloop.workflows import create_multigpu_supervised_evaluator, create_multigpu_supervised_trainer


def test_multigpu_factories_on_cpu() -> None:
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    ref = torch.nn.Linear(3, 1)
    ref.load_state_dict(net.state_dict())
    data = [(torch.rand(4, 3), torch.rand(4, 1)) for _ in range(3)]
    trainer = create_multigpu_supervised_trainer(net, torch.optim.SGD(net.parameters(), 0.1), torch.nn.MSELoss(), [])
    trainer.run(data)
    ref_opt = torch.optim.SGD(ref.parameters(), 0.1)
    for x, y in data:
        ref_opt.zero_grad()
        loss = torch.nn.functional.mse_loss(ref(x), y)
        loss.backward()
        ref_opt.step()
    assert trainer.state.output == pytest.approx(loss.item())
    assert torch.allclose(net.weight, ref.weight)
    evaluator = create_multigpu_supervised_evaluator(net, {"mse": MeanSquaredError()}, devices=[])
    evaluator.run(data)
    expected = torch.cat([(net(x) - y) ** 2 for x, y in data]).mean().item()
    assert evaluator.state.metrics["mse"] == pytest.approx(expected, rel=1e-5)


def test_distributed_needs_one_device() -> None:
    with pytest.raises(ValueError, match="only 1 GPU or CPU"):
        create_multigpu_supervised_trainer(torch.nn.Linear(1, 1), None, None, ["cpu", "cpu"], distributed=True)
