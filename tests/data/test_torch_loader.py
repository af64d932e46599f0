"""Tests of ``hotloop.data.torch_loader``: DALI's sharding reproduced, empty batches, the dataset's decoding."""

from __future__ import annotations

import itertools

import pytest
import torch

from hotloop.data import HAS_DALI, ShardedBatchSampler, image_folder_loader
from hotloop.data.torch_loader import ImageFolderDataset
from hotloop.data.transforms import ImageTransform

needs_dali = pytest.mark.skipif(not HAS_DALI, reason="NVIDIA DALI is not installed (pip install 'hotloop[dali]')")


@pytest.mark.parametrize("size, batch_size, shards", list(itertools.product([1, 7, 37, 90], [1, 4, 6], [1, 2, 3])))
@pytest.mark.parametrize("drop_last", [False, True])
def test_shards_cover_each_sample_once_and_keep_step(size, batch_size, shards, drop_last):
    samplers = [
        ShardedBatchSampler(size, batch_size, shuffle=True, seed=5, shard_id=s, num_shards=shards, drop_last=drop_last)
        for s in range(shards)
    ]
    for epoch in range(2):
        for sampler in samplers:
            sampler.set_epoch(epoch)
        batches = [list(sampler) for sampler in samplers]
        assert {len(b) for b in batches} == {len(samplers[0])}
        indices = [key[0] for shard in batches for batch in shard for key in batch]
        assert len(indices) == len(set(indices)) and all(key[1] == epoch for b in batches[0] for key in b)
        if not drop_last:
            assert sorted(indices) == list(range(size))
        assert all(len(batch) <= batch_size for shard in batches for batch in shard)


def test_shuffle_changes_with_the_epoch_only():
    sampler = ShardedBatchSampler(20, 20, shuffle=True, seed=1, shard_id=0, num_shards=1, drop_last=False)
    first = sampler.shard()
    assert first == sampler.shard() and first != list(range(20))
    sampler.set_epoch(1)
    assert sampler.shard() != first


@needs_dali
@pytest.mark.parametrize("batch_size, shards", [(6, 2), (7, 3), (45, 2), (8, 1)])
def test_lengths_and_batch_sizes_match_dali(digits_png, batch_size, shards):
    for shard in range(shards):
        sizes = {}
        for backend in ("dali", "torch"):
            loader = image_folder_loader(
                digits_png["root"], batch_size=batch_size, grayscale=True, backend=backend, num_threads=1,
                shard_id=shard, num_shards=shards,
            )  # fmt: skip
            sizes[backend] = [b["label"].shape[0] for b in loader]
        assert sizes["dali"] == sizes["torch"]


@pytest.mark.parametrize("backend", [pytest.param("dali", marks=needs_dali), "torch"])
def test_a_shorter_shard_ends_on_an_empty_batch(tmp_path, backend):
    from PIL import Image

    (tmp_path / "0").mkdir()
    for i in range(7):
        Image.new("L", (4, 4), color=i).save(tmp_path / "0" / f"{i}.png")
    # 7 samples in 2 shards (3 and 4) by batches of 3: both shards yield 2 batches so that ranks keep step.
    shapes = [
        [tuple(b["image"].shape) for b in image_folder_loader(
            tmp_path, batch_size=3, grayscale=True, backend=backend, num_threads=1, shard_id=s, num_shards=2
        )]
        for s in range(2)
    ]  # fmt: skip
    assert shapes == [[(3, 1, 4, 4), (0, 1, 4, 4)], [(3, 1, 4, 4), (1, 1, 4, 4)]]


def test_collate_of_an_empty_batch():
    from hotloop.data.torch_loader import _Collate

    batch = _Collate(("image", "label"), [((1, 8, 8), torch.float32), ((), torch.int64)])([])
    assert batch["image"].shape == (0, 1, 8, 8) and batch["label"].shape == (0,)
    assert batch["label"].dtype == torch.int64


def test_dataset_crops_and_flips_deterministically(digits_png):
    from hotloop.data import list_image_folder

    files, labels, _ = list_image_folder(digits_png["root"])
    dataset = ImageFolderDataset(files, labels, ImageTransform((8, 8), train=True, grayscale=True), seed=0)
    assert dataset[(0, 0)][0].shape == (1, 8, 8) and torch.equal(dataset[(0, 0)][0], dataset[(0, 0)][0])
    assert any(not torch.equal(dataset[(i, 0)][0], dataset[(i, 1)][0]) for i in range(10))  # new draws per epoch


def test_image_dataset_without_pillow_fails_in_the_main_process(hide_packages):
    """A worker process would otherwise fail on its first image with a bare ``No module named 'PIL'``."""
    hide_packages("PIL")
    with pytest.raises(ModuleNotFoundError, match=r"needs Pillow, which is not installed: .*'hotloop\[images\]'"):
        ImageFolderDataset(["a.png"], [0], ImageTransform(image_size=8))
