"""Tests of ``hotloop.data.pipelines``: the device probe and the DALI-missing path (no GPU needed)."""

from __future__ import annotations

import sys

import pytest
import torch

from hotloop.data import HAS_DALI, dali_device_id, image_folder_pipeline, require_dali
from hotloop.data.transforms import ImageTransform


def test_device_probe_selects_cpu_or_gpu_pipelines(monkeypatch):
    assert dali_device_id(None) is None and dali_device_id("cpu") is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        dali_device_id("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert dali_device_id("cuda:1") == 1 and dali_device_id(torch.device("cuda")) == 3
    with pytest.raises(ValueError, match="CPU or a CUDA device"):
        dali_device_id("mps")
    with pytest.raises(TypeError, match="device"):
        dali_device_id(0)  # type: ignore[arg-type]


def test_missing_dali_raises_with_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'hotloop\[dali\]'"):
        require_dali("this feature")
    with pytest.raises(ModuleNotFoundError, match="image_folder_pipeline"):
        image_folder_pipeline(["a.png"], [0], batch_size=1, transform=ImageTransform((8, 8)))


@pytest.mark.skipif(not HAS_DALI, reason="NVIDIA DALI is not installed (pip install 'hotloop[dali]')")
def test_cpu_pipeline_has_a_padded_named_reader(digits_png):
    from hotloop.data import list_image_folder

    files, labels, _ = list_image_folder(digits_png["root"])
    pipe = image_folder_pipeline(
        files, labels, batch_size=8, transform=ImageTransform((8, 8), grayscale=True), num_threads=1, shard_id=1,
        num_shards=2,
    )  # fmt: skip
    pipe.build()
    meta = pipe.reader_meta("Reader")
    assert meta["pad_last_batch"] and meta["number_of_shards"] == 2 and meta["shard_id"] == 1
    assert meta["epoch_size"] == len(files) and pipe.device_id is None


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"image_size": 0}, ValueError),
        ({"image_size": (8, 8), "mean": (0.1, 0.2)}, ValueError),
        ({"image_size": (8, 8), "std": 0}, ValueError),
        ({"image_size": (8, 8), "mean": "a"}, TypeError),
    ],
)
def test_transform_arguments_are_checked(kwargs, error):
    with pytest.raises(error):
        ImageTransform(**kwargs)


def test_train_transform_resizes_an_eighth_larger():
    t = ImageTransform((16, 8), train=True, mean=0.5, std=(0.25,), grayscale=True)
    assert t.resize_size == (18, 9) and t.mean255 == [127.5] and t.std255 == [63.75]
    assert ImageTransform(8).channels == 3 and ImageTransform(8).resize_size == (8, 8)
