"""Tests of ``image_folder_loader`` / ``volume_loader``: both backends on the same files, and training end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import hotloop
from hotloop.data import HAS_DALI, image_folder_loader, list_image_folder, volume_loader

needs_dali = pytest.mark.skipif(not HAS_DALI, reason="NVIDIA DALI is not installed (pip install 'hotloop[dali]')")
BACKENDS = [pytest.param("dali", marks=needs_dali), "torch"]


def _all(loader, keys=("image", "label")):
    batches = list(loader)
    return [torch.cat([b[k] for b in batches]) for k in keys]


@pytest.mark.parametrize("backend", BACKENDS)
def test_normalisation_labels_shapes_dtypes(digits_png, backend):
    loader = image_folder_loader(
        digits_png["root"], batch_size=16, grayscale=True, mean=0.5, std=0.25, backend=backend, num_threads=1
    )
    image, label = _all(loader)
    assert image.dtype == torch.float32 and image.shape == (digits_png["count"], 1, 8, 8)
    assert label.dtype == torch.int64 and label.shape == (digits_png["count"],)
    files, labels, _ = list_image_folder(digits_png["root"])
    digits = load_digits()
    index = [int(f.rsplit("/", 1)[1].split(".")[0]) for f in files]  # not shuffled: file order
    pixels = torch.tensor(np.rint(digits.images[index] * 255 / 16), dtype=torch.float32).unsqueeze(1)
    torch.testing.assert_close(image, (pixels / 255 - 0.5) / 0.25)
    assert label.tolist() == labels == digits.target[index].tolist()


@needs_dali
@pytest.mark.parametrize(
    "kwargs", [{"grayscale": True}, {"image_size": 16}, {"image_size": (16, 24), "mean": (0.1, 0.2, 0.3), "std": 0.5}]
)
def test_dali_and_torch_backends_agree_on_png(digits_png, kwargs):
    dali, torch_ = (
        _all(image_folder_loader(digits_png["root"], batch_size=32, backend=b, num_threads=1, **kwargs))
        for b in ("dali", "torch")
    )
    # Native size and up-scaling agree exactly; the tolerance allows one grey level of resize rounding.
    torch.testing.assert_close(dali[0], torch_[0], atol=1.01 / 255 / 0.5, rtol=0)
    assert torch.equal(dali[1], torch_[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_jpeg_training_augmentations(digits_jpg, backend):
    loader = image_folder_loader(
        digits_jpg["root"], batch_size=32, image_size=12, train=True, backend=backend, num_threads=1, as_tuple=True
    )
    first = [x for x, _ in loader]
    second = [x for x, _ in loader]
    assert all(x.shape[1:] == (3, 12, 12) and x.dtype == torch.float32 for x in first)
    assert 0.0 <= min(x.min().item() for x in first) and max(x.max().item() for x in first) <= 1.0
    assert sum(x.shape[0] for x in second) == digits_jpg["count"]
    assert not torch.equal(first[0], second[0])  # new order and new crops each epoch


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("batch_size", [4, 9])
def test_two_simulated_ranks_cover_every_sample_once(digits_png, backend, batch_size):
    kwargs = {"batch_size": batch_size, "backend": backend, "num_threads": 1, "shuffle": True, "grayscale": True}
    shards = [image_folder_loader(digits_png["root"], shard_id=s, num_shards=2, **kwargs) for s in range(2)]
    assert len(shards[0]) == len(shards[1])
    for _ in range(2):
        images = torch.cat([_all(shard)[0] for shard in shards])
        whole = _all(image_folder_loader(digits_png["root"], **{**kwargs, "batch_size": 90}))[0]
        keys = sorted(tuple(x.flatten().tolist()) for x in images)
        assert len(keys) == digits_png["count"] and keys == sorted(tuple(x.flatten().tolist()) for x in whole)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_inputs_give_clear_errors(tmp_path, backend):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        image_folder_loader(tmp_path / "missing", batch_size=4, backend=backend)
    with pytest.raises(ValueError, match="no class sub-folder"):
        image_folder_loader(tmp_path, batch_size=4, backend=backend)
    from PIL import Image

    (tmp_path / "0").mkdir()
    for i in range(3):
        Image.new("L", (8, 8), color=i).save(tmp_path / "0" / f"{i}.png")
    (tmp_path / "0" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(RuntimeError, match=r"3\.png"):
        list(image_folder_loader(tmp_path, batch_size=4, image_size=8, backend=backend, num_threads=1))
    with pytest.raises(ValueError, match="batch_size"):
        image_folder_loader(tmp_path, batch_size=0, backend=backend)
    if backend == "dali":
        with pytest.raises(ValueError, match="num_threads >= 1"):
            image_folder_loader(tmp_path, batch_size=4, backend=backend, num_threads=0)
    else:  # 0 workers: decoded in the main process
        assert len(image_folder_loader(tmp_path, batch_size=4, image_size=8, backend=backend, num_threads=0)) == 1
    with pytest.raises(ValueError, match="shard_id"):
        image_folder_loader(tmp_path, batch_size=4, backend=backend, shard_id=2, num_shards=2)


def test_unknown_backend_and_missing_dali(digits_png, monkeypatch):
    with pytest.raises(ValueError, match="backend"):
        image_folder_loader(digits_png["root"], batch_size=4, backend="pil")
    import hotloop.data.factories as factories

    monkeypatch.setattr(factories, "HAS_DALI", False)
    assert factories.resolve_backend("auto") == "torch"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kwargs", [{}, {"roi_size": (4, 5, 7)}, {"roi_size": (4, 5, 7), "train": True}])
def test_volumes(volumes, backend, kwargs):
    images, labels = volumes
    loader = volume_loader(images, labels, batch_size=3, mean=1.0, std=2.0, backend=backend, num_threads=1, **kwargs)
    assert len(loader) == 3
    image, label = _all(loader)
    spatial = kwargs.get("roi_size", (9, 10, 11))
    assert image.shape == (7, 1, *spatial) and image.dtype == torch.float32
    assert label.shape == (7, 1, *spatial) and label.dtype == torch.int64
    # Labels are image > 100 i: they stay paired with their image through shuffles, crops and flips.
    threshold = torch.tensor([100.0 * i for i in range(7)]).view(7, 1, 1, 1, 1)
    if kwargs.get("train"):
        threshold = (image.mean((1, 2, 3, 4), keepdim=True) * 2 + 1).div(100).round().mul(100)
    assert torch.equal((image * 2 + 1 > threshold).long(), label)


@needs_dali
@pytest.mark.parametrize("kwargs", [{}, {"roi_size": (4, 5, 6)}])
def test_volume_backends_agree(volumes, kwargs):
    images, labels = volumes
    dali, torch_ = (
        _all(volume_loader(images, labels, batch_size=4, backend=b, num_threads=1, mean=0.5, std=3.0, **kwargs))
        for b in ("dali", "torch")
    )
    torch.testing.assert_close(dali[0], torch_[0])
    assert torch.equal(dali[1], torch_[1])


def test_volume_errors(volumes, tmp_path):
    images, labels = volumes
    with pytest.raises(ValueError, match="one label per image"):
        volume_loader(images, sorted(str(p) for p in labels.iterdir())[:3], batch_size=2, backend="torch")
    with pytest.raises(ValueError, match="larger than"):
        volume_loader(images, batch_size=2, roi_size=(20, 2, 2), backend="torch")
    np.save(tmp_path / "a.npy", np.zeros((2, 2, 2)))
    np.save(tmp_path / "b.npy", np.zeros((3, 2, 2)))
    with pytest.raises(ValueError, match="different shapes"):
        volume_loader(tmp_path, batch_size=2, backend="torch")
    (tmp_path / "c.npy").write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match=r"c\.npy"):
        volume_loader(tmp_path, batch_size=2, backend="torch")


@pytest.mark.parametrize("backend", BACKENDS)
def test_small_cnn_trains_through_create_supervised_trainer(digits_png, backend):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 10)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = hotloop.create_supervised_trainer(model, optimizer, torch.nn.CrossEntropyLoss())
    loader = image_folder_loader(
        digits_png["root"], batch_size=16, grayscale=True, train=True, backend=backend, num_threads=1, as_tuple=True
    )
    seen: dict[int, int] = {}
    losses: list[float] = []

    @trainer.on(hotloop.Events.ITERATION_COMPLETED)
    def _count(engine):
        seen[engine.state.epoch] = seen.get(engine.state.epoch, 0) + engine.state.batch[0].shape[0]
        losses.append(engine.state.output)

    trainer.run(loader, max_epochs=4)
    assert seen == {e: digits_png["count"] for e in (1, 2, 3, 4)}
    assert trainer.state.epoch_length == len(loader) == 6
    n = len(loader)
    assert sum(losses[-n:]) < sum(losses[:n])  # it learns


def test_dataloader_fallback_without_pillow_names_the_extra_before_any_work(hide_packages, tmp_path):
    hide_packages("PIL")
    absent = tmp_path / "not-there"  # no folder is listed: the check comes first
    with pytest.raises(ModuleNotFoundError, match=r"backend='torch'.* needs Pillow, .*'hotloop\[images\]'"):
        image_folder_loader(absent, batch_size=4, image_size=8, backend="torch")
    with pytest.raises(ModuleNotFoundError, match=r"image_size=None.* needs Pillow, .*'hotloop\[images\]'"):
        image_folder_loader(absent, batch_size=4, image_size=None, backend="auto")
