"""Tests of ``hotloop.data.DALILoader``: exact epochs, sharding, buffer safety and the engine's data hooks.

These need NVIDIA DALI (CPU pipelines, ``device_id=None``) and skip without it.
"""

from __future__ import annotations

import sys
from collections import Counter

import pytest
import torch

import hotloop
from hotloop.data import HAS_DALI, DALILoader, image_folder_loader, list_image_folder

pytestmark = pytest.mark.skipif(not HAS_DALI, reason="NVIDIA DALI is not installed (pip install 'hotloop[dali]')")


def _loader(root, batch_size=8, **kwargs):
    kwargs = {"image_size": 8, "grayscale": True, "num_threads": 1, "backend": "dali", **kwargs}
    return image_folder_loader(root, batch_size=batch_size, **kwargs)


def _labels(batches):
    return Counter(torch.cat([b["label"] for b in batches]).tolist())


@pytest.mark.parametrize("batch_size", [7, 8, 90])
def test_every_epoch_reads_each_file_exactly_once(digits_png, batch_size):
    expected = Counter({c: n for c, n in digits_png["per_class"].items()})
    loader = _loader(digits_png["root"], batch_size, shuffle=True)
    assert len(loader) == -(-digits_png["count"] // batch_size)
    orders = []
    for _ in range(3):
        batches = list(loader)
        assert len(batches) == len(loader)
        assert [b["image"].shape[0] for b in batches[:-1]] == [batch_size] * (len(batches) - 1)
        assert _labels(batches) == expected
        orders.append(torch.cat([b["label"] for b in batches]))
    if batch_size < 90:
        assert not torch.equal(orders[0], orders[1])  # shuffle_after_epoch: a new permutation each epoch


def test_drop_last_leaves_out_the_incomplete_batch(digits_png):
    loader = _loader(digits_png["root"], 8, drop_last=True)
    for _ in range(2):
        batches = list(loader)
        assert len(batches) == len(loader) == digits_png["count"] // 8
        assert all(b["label"].shape == (8,) for b in batches)


@pytest.mark.parametrize("batch_size", [4, 9, 45])
def test_two_shards_cover_every_sample_once(digits_png, batch_size):
    files, labels, _ = list_image_folder(digits_png["root"])
    shards = [_loader(digits_png["root"], batch_size, shard_id=s, num_shards=2, shuffle=True) for s in range(2)]
    assert len(shards[0]) == len(shards[1])  # ranks keep step
    for _ in range(2):
        # The image sum identifies a digit file well enough here; labels must match as a multiset too.
        seen = [torch.cat([b["image"].sum((1, 2, 3)) for b in shard]) for shard in shards]
        together = torch.sort(torch.cat(seen)).values
        assert together.numel() == len(files)
        assert len(seen[0]) == len(files) // 2 and len(seen[1]) == len(files) - len(files) // 2
    reference = torch.sort(torch.cat([b["image"].sum((1, 2, 3)) for b in _loader(digits_png["root"], 90)])).values
    torch.testing.assert_close(together, reference)


def test_held_batches_are_not_overwritten(digits_png):
    loader = _loader(digits_png["root"], 8)
    held = [(b["image"], b["image"].clone(), b["label"], b["label"].clone()) for b in loader]
    list(loader)  # another epoch through the same DALI buffers
    for image, image_copy, label, label_copy in held:
        assert torch.equal(image, image_copy) and torch.equal(label, label_copy)


def test_as_tuple_and_output_map(digits_png):
    image, label = next(iter(_loader(digits_png["root"], 8, as_tuple=True, output_map=("x", "y"))))
    assert image.dtype == torch.float32 and image.shape == (8, 1, 8, 8)
    assert label.dtype == torch.int64 and label.shape == (8,)
    batch = next(iter(_loader(digits_png["root"], 8, output_map=("x", "y"))))
    assert set(batch) == {"x", "y"} and batch["y"].dtype == torch.int64


def _counting_trainer(seen):
    def step(engine, batch):
        seen[engine.state.epoch] = seen.get(engine.state.epoch, 0) + batch["label"].shape[0]

    return hotloop.Engine(step)


def test_engine_epochs_and_terminate_epoch_start_a_full_epoch(digits_png):
    loader, seen = _loader(digits_png["root"], 8), {}
    trainer = _counting_trainer(seen)

    @trainer.on(hotloop.Events.ITERATION_COMPLETED(once=3))
    def _stop_early(engine):
        engine.terminate_epoch()

    trainer.run(loader, max_epochs=3)
    # Epoch 1 stops after 3 batches; the rest of DALI's epoch is read and discarded, so epoch 2 starts afresh.
    assert seen == {1: 24, 2: digits_png["count"], 3: digits_png["count"]}
    assert loader.epoch == 3


def test_epoch_length_shorter_than_the_loader_continues_the_stream(digits_png):
    loader, seen = _loader(digits_png["root"], 10), {}
    _counting_trainer(seen).run(loader, max_epochs=3, epoch_length=6)  # 9 batches per DALI epoch
    assert seen == {1: 60, 2: 60, 3: 60}


def test_set_data_and_resume_from_a_state_dict(digits_png, digits_jpg):
    # Ignite's set_data keeps the epoch length: the new loader should have as many batches.
    first, second = _loader(digits_png["root"], 30), _loader(digits_jpg["root"], 30)
    seen: dict[int, int] = {}
    trainer = _counting_trainer(seen)

    @trainer.on(hotloop.Events.EPOCH_COMPLETED(once=1))
    def _swap(engine):
        engine.set_data(second)

    trainer.run(first, max_epochs=2)
    assert seen == {1: digits_png["count"], 2: digits_jpg["count"]}

    state = trainer.state_dict()
    resumed_seen: dict[int, int] = {}
    resumed = _counting_trainer(resumed_seen)
    resumed.load_state_dict(state)
    resumed.run(second, max_epochs=4)
    assert resumed_seen == {3: digits_jpg["count"], 4: digits_jpg["count"]}


def test_user_pipeline_def(digits_png):
    from nvidia.dali import fn, pipeline_def, types

    files, labels, _ = list_image_folder(digits_png["root"])

    @pipeline_def(batch_size=16, num_threads=1, device_id=None)
    def pipe():
        encoded, label = fn.readers.file(files=files, labels=labels, name="files", pad_last_batch=True)
        return fn.decoders.image(encoded, output_type=types.GRAY), label

    loader = DALILoader(pipe(), ("pixels", "label"), reader_name="files")
    batches = list(loader)
    assert sum(b["pixels"].shape[0] for b in batches) == len(files) and len(batches) == len(loader)
    assert batches[0]["pixels"].dtype == torch.uint8 and batches[0]["pixels"].shape == (16, 8, 8, 1)


def test_bad_pipelines_are_rejected(digits_png):
    from nvidia.dali import fn, pipeline_def

    files, labels, _ = list_image_folder(digits_png["root"])

    @pipeline_def(batch_size=16, num_threads=1, device_id=None)
    def unpadded():
        encoded, label = fn.readers.file(files=files, labels=labels, name="Reader")
        return encoded, label

    with pytest.raises(ValueError, match="pad_last_batch=True"):
        DALILoader(unpadded(), ("data", "label"))
    with pytest.raises(ValueError, match="names no reader"):
        DALILoader(unpadded(), ("data", "label"), reader_name="nope")
    with pytest.raises(TypeError, match="reader_name"):
        DALILoader(unpadded(), ("data", "label"), reader_name=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="last_batch"):
        DALILoader(unpadded(), ("data", "label"), last_batch="fill")


def test_corrupt_file_names_the_file(tmp_path):
    from PIL import Image

    (tmp_path / "0").mkdir()
    for i in range(3):
        Image.new("L", (8, 8), color=i).save(tmp_path / "0" / f"{i}.png")
    (tmp_path / "0" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a PNG")
    with pytest.raises(RuntimeError, match=r"3\.png"):
        list(_loader(tmp_path, 4))


def test_missing_dali_names_the_extra(digits_png, monkeypatch):
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # import nvidia.dali now raises ModuleNotFoundError
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'hotloop\[dali\]'"):
        _loader(digits_png["root"], 8)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for DALI's mixed decoder")
def test_gpu_pipeline_matches_cpu_pipeline(digits_png):
    cpu = list(_loader(digits_png["root"], 16, image_size=16))
    gpu = list(_loader(digits_png["root"], 16, image_size=16, device="cuda"))
    assert gpu[0]["image"].device.type == "cuda" and gpu[0]["label"].dtype == torch.int64
    for c, g in zip(cpu, gpu):
        torch.testing.assert_close(g["image"].cpu(), c["image"], atol=2 / 255, rtol=0)
        assert torch.equal(g["label"].cpu(), c["label"])


def _recording_trainer(record):
    return hotloop.Engine(lambda engine, batch: record.append(batch["label"].clone()))


@pytest.mark.parametrize("extra", [3, 0])  # inside epoch 2, or at the end of epoch 1
def test_resume_inside_an_epoch_continues_exactly(digits_png, tmp_path, extra):
    from ignite.handlers import Checkpoint, DiskSaver

    kwargs = {"batch_size": 8, "shuffle": True, "train": True, "image_size": 8}
    reference: list[torch.Tensor] = []
    _recording_trainer(reference).run(_loader(digits_png["root"], **kwargs), max_epochs=3)

    first: list[torch.Tensor] = []
    loader = _loader(digits_png["root"], **kwargs)
    trainer = _recording_trainer(first)
    stop_at = len(loader) + extra
    to_save = {"trainer": trainer, "loader": loader}
    saver = Checkpoint(to_save, DiskSaver(tmp_path, require_empty=False), n_saved=1)
    trainer.add_event_handler(hotloop.Events.ITERATION_COMPLETED(once=stop_at), saver)
    trainer.add_event_handler(hotloop.Events.ITERATION_COMPLETED(once=stop_at), lambda e: e.terminate())
    trainer.run(loader, max_epochs=3)
    assert len(first) == stop_at

    rest: list[torch.Tensor] = []
    loader = _loader(digits_png["root"], **kwargs)
    trainer = _recording_trainer(rest)
    Checkpoint.load_objects({"trainer": trainer, "loader": loader}, torch.load(saver.last_checkpoint))
    trainer.run(loader, max_epochs=3)
    assert len(first) + len(rest) == len(reference)
    assert all(torch.equal(a, b) for a, b in zip(first + rest, reference))


def test_state_dict_needs_a_checkpointing_pipeline_function(digits_png):
    from nvidia.dali import fn, pipeline_def

    files, labels, _ = list_image_folder(digits_png["root"])

    @pipeline_def(batch_size=16, num_threads=1, device_id=None)
    def pipe():
        encoded, label = fn.readers.file(files=files, labels=labels, name="Reader", pad_last_batch=True)
        return fn.decoders.image(encoded), label

    with pytest.raises(ValueError, match="enable_checkpointing=True"):
        DALILoader(pipe, ("data", "label")).state_dict()
    with pytest.raises(TypeError, match="pipeline function"):
        DALILoader(pipe(), ("data", "label")).load_state_dict({})
