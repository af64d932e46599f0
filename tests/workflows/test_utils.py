"""hotloop.workflows.utils against monai.engines.utils: the same results for the same inputs."""

from __future__ import annotations

from typing import Any

import pytest
import torch

monai = pytest.importorskip("monai")

import monai.engines.utils as monai_utils  # noqa: E402
from _workflow_scenarios import assert_same  # noqa: E402
from monai.transforms import Activationsd  # noqa: E402

from hotloop.workflows import utils as hl_utils  # noqa: E402

BATCHES: list[Any] = [
    torch.ones(2, 3),
    (torch.ones(2, 3), torch.zeros(2)),
    {"image": torch.ones(2, 3), "label": torch.zeros(2)},
    {"image": torch.ones(2, 3), "label": "not a tensor"},
    {"image": torch.ones(2, 3)},
    {"reals": torch.ones(2, 3), "image": torch.zeros(1)},
]


@pytest.mark.parametrize("batch", BATCHES)
def test_default_prepare_batch(batch: Any) -> None:
    kwargs = {"dtype": torch.float64}
    assert_same(
        hl_utils.default_prepare_batch(batch, "cpu", False, **kwargs),
        monai_utils.default_prepare_batch(batch, "cpu", False, **kwargs),
    )
    assert_same(hl_utils.PrepareBatchDefault()(batch, "cpu"), monai_utils.PrepareBatchDefault()(batch, "cpu"))


def test_default_prepare_batch_rejects_other_sequences() -> None:
    with pytest.raises(AssertionError, match="single tensor, a tensor pair"):
        hl_utils.default_prepare_batch([torch.ones(1)] * 3)


@pytest.mark.parametrize("extra_keys", ["mask", ["mask", "name"], {"m": "mask", "n": "name"}])
def test_prepare_batch_extra_input(extra_keys: Any) -> None:
    batch = {"image": torch.ones(2, 3), "label": torch.zeros(2), "mask": torch.ones(2), "name": ["a", "b"]}
    got = hl_utils.PrepareBatchExtraInput(extra_keys)(batch, "cpu", dtype=torch.float16)
    ref = monai_utils.PrepareBatchExtraInput(extra_keys)(batch, "cpu", dtype=torch.float16)
    assert_same(got, ref)


def test_get_devices_spec() -> None:
    assert hl_utils.get_devices_spec([]) == monai_utils.get_devices_spec([]) == [torch.device("cpu")]
    assert hl_utils.get_devices_spec(["cpu", torch.device("cpu")]) == [torch.device("cpu")] * 2
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="No GPU"):
            hl_utils.get_devices_spec(None)


def test_engine_apply_transform_splits_like_monai() -> None:
    def transform(d: dict) -> dict:
        return {**d, "pred": d["pred"] * 2, "extra": 1, "meta": "changed"}

    for impl in (hl_utils, monai_utils):
        batch, output = impl.engine_apply_transform({"meta": "m", "pred": 0}, {"pred": torch.ones(1)}, transform)
        assert batch == {"meta": "changed", "pred": 0}
        assert output["extra"] == 1 and output["pred"].item() == 2
    got = hl_utils.engine_apply_transform(None, {"pred": torch.zeros(2)}, Activationsd("pred", sigmoid=True))
    ref = monai_utils.engine_apply_transform(None, {"pred": torch.zeros(2)}, Activationsd("pred", sigmoid=True))
    assert_same(got, ref)
    with pytest.raises(AssertionError, match="single dict"):
        hl_utils.engine_apply_transform({}, {}, lambda d: [d])


def test_small_helpers() -> None:
    assert hl_utils.default_metric_cmp_fn(2.0, 1.0) and not hl_utils.default_metric_cmp_fn(1.0, 1.0)
    torch.manual_seed(0)
    got = hl_utils.default_make_latent(3, 5, "cpu")
    torch.manual_seed(0)
    assert torch.equal(got, monai_utils.default_make_latent(3, 5, "cpu"))
    assert [m.value for m in hl_utils.CommonKeys] == [m.value for m in monai.utils.CommonKeys]
    assert [m.value for m in hl_utils.EngineStatsKeys] == [m.value for m in monai.utils.enums.EngineStatsKeys]
    assert [(m.name, m.value) for m in hl_utils._IterationEvents] == [
        (m.name, m.value) for m in monai_utils.IterationEvents
    ]
