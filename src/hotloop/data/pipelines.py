"""DALI pipelines for the common cases: an image-classification folder and lists of ``.npy`` volumes.

Each pipeline runs on the CPU (``device_id=None``: ``decoders.image`` and every operator on the host) or, given a
CUDA device, decodes with the ``"mixed"`` operator (nvJPEG / nvImageCodec) and runs the rest on the GPU. The reader
is named (``reader_name``) and pads its last batch (``pad_last_batch=True``) so that :class:`~hotloop.data.DALILoader`
can give exact epochs; shuffling is ``shuffle_after_epoch`` (one permutation of the whole data set per epoch, the same
on every shard) so that the shards of one epoch never overlap.

NVIDIA DALI is optional (``pip install 'hotloop[dali]'``); :data:`HAS_DALI` says whether it is installed.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

import torch

from hotloop.data.transforms import ImageTransform, VolumeTransform

__all__ = ["HAS_DALI", "dali_device_id", "image_folder_pipeline", "require_dali", "volume_pipeline"]


def _find_dali() -> bool:
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except ModuleNotFoundError:  # no ``nvidia`` namespace package at all
        return False


#: Whether NVIDIA DALI is installed. Found without importing it: ``import nvidia.dali`` takes about 0.8 s.
HAS_DALI: bool = _find_dali()


def require_dali(feature: str) -> Any:
    """Imports ``nvidia.dali`` for ``feature``, or says how to install it.

    Args:
        feature: what needs DALI, for the message.

    Returns:
        The ``nvidia.dali`` module.

    Raises:
        ModuleNotFoundError: DALI is not installed.
    """
    try:
        import nvidia.dali as dali
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            f"{feature} needs NVIDIA DALI, which is not installed: pip install 'hotloop[dali]' "
            "(or use backend='torch' for the DataLoader fallback)"
        ) from e
    return dali


def dali_device_id(device: str | torch.device | None) -> int | None:
    """The ``device_id`` of a DALI pipeline that should deliver to ``device``: ``None`` (CPU pipeline) or a GPU index.

    Args:
        device: ``None`` or a CPU device for a CPU pipeline; a CUDA device for a pipeline with GPU operators.

    Returns:
        ``None`` for a CPU pipeline, otherwise the CUDA device index.

    Raises:
        TypeError: ``device`` is not a device.
        ValueError: ``device`` is neither CPU nor CUDA.
        RuntimeError: a CUDA device is asked for but CUDA is not available.
    """
    if device is None:
        return None
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device should be None, a str or a torch.device, got {type(device).__name__}: {device!r}")
    dev = torch.device(device)
    if dev.type == "cpu":
        return None
    if dev.type != "cuda":
        raise ValueError(f"DALI pipelines run on the CPU or a CUDA device, got device={str(dev)!r}")
    if not torch.cuda.is_available():
        raise RuntimeError(f"device={str(dev)!r} asks for GPU operators, but CUDA is not available; use device=None")
    return dev.index if dev.index is not None else torch.cuda.current_device()


def _reader_args(shard_id: int, num_shards: int, shuffle: bool, seed: int, name: str) -> dict[str, Any]:
    # The reader's seed must be the same on every shard: it draws the per-epoch permutation the shards split.
    return {
        "name": name,
        "shard_id": shard_id,
        "num_shards": num_shards,
        "pad_last_batch": True,
        "shuffle_after_epoch": shuffle,
        "seed": seed,
    }


def image_folder_pipeline(
    files: Sequence[str],
    labels: Sequence[int],
    *,
    batch_size: int,
    transform: ImageTransform,
    shuffle: bool = False,
    num_threads: int = 2,
    device_id: int | None = None,
    seed: int = 0,
    shard_id: int = 0,
    num_shards: int = 1,
    reader_name: str = "Reader",
    **pipeline_kwargs: Any,
) -> Any:
    """A DALI pipeline ``readers.file → decoders.image → resize → crop_mirror_normalize`` over a list of files.

    Outputs: ``image`` float32 ``[C, H, W]`` per sample and ``label`` int32 ``[1]`` per sample, on the GPU when
    ``device_id`` is set.

    Args:
        files: encoded image files (JPEG, PNG, ...).
        labels: one integer label per file.
        batch_size: samples per batch.
        transform: sizes, augmentations and normalisation.
        shuffle: a new permutation of all files each epoch (``shuffle_after_epoch``).
        num_threads: DALI's CPU worker threads.
        device_id: ``None`` for a CPU pipeline, a CUDA index for ``"mixed"`` decoding and GPU operators.
        seed: seeds the shuffle (same on every shard) and, offset by ``shard_id``, the augmentations.
        shard_id: this process's shard.
        num_shards: the number of shards the files are split into.
        reader_name: the reader's name, for :class:`~hotloop.data.DALILoader`'s ``reader_name``.
        **pipeline_kwargs: more ``nvidia.dali.Pipeline`` arguments (``enable_checkpointing``, ``checkpoint``,
            ``prefetch_queue_depth``...).

    Returns:
        An unbuilt ``nvidia.dali.Pipeline``.

    Raises:
        ModuleNotFoundError: DALI is not installed.
    """
    dali = require_dali("image_folder_pipeline")
    fn, types = dali.fn, dali.types

    t = transform

    @dali.pipeline_def
    def _images() -> tuple[Any, Any]:
        encoded, label = fn.readers.file(
            files=list(files), labels=list(labels), **_reader_args(shard_id, num_shards, shuffle, seed, reader_name)
        )
        image = fn.decoders.image(
            encoded,
            device="cpu" if device_id is None else "mixed",
            output_type=types.GRAY if t.grayscale else types.RGB,
        )
        h, w = t.resize_size
        image = fn.resize(image, resize_x=w, resize_y=h)
        crop: dict[str, Any] = {}
        if t.train:
            crop = {
                "crop": t.image_size,
                "crop_pos_x": fn.random.uniform(range=(0.0, 1.0)),
                "crop_pos_y": fn.random.uniform(range=(0.0, 1.0)),
                "mirror": fn.random.coin_flip(probability=0.5),
            }
        image = fn.crop_mirror_normalize(
            image, dtype=types.FLOAT, output_layout="CHW", mean=t.mean255, std=t.std255, **crop
        )
        return image, (label if device_id is None else label.gpu())

    return _images(
        batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed + shard_id, **pipeline_kwargs
    )


def _volume_ops(node: Any, has_channel: bool, crop: dict[str, Any], flips: dict[str, Any]) -> Any:
    """Lays out ``node`` as ``CDHW`` (adding the channel axis) and applies the shared crop and flips."""
    fn = require_dali("volume_pipeline").fn

    if has_channel:
        node = fn.reshape(node, layout="CDHW")
    else:
        node = fn.expand_dims(fn.reshape(node, layout="DHW"), axes=[0], new_axis_names="C")
    if crop:
        node = fn.crop(node, **crop)
    if flips:
        node = fn.flip(node, **flips)
    return node


def volume_pipeline(
    image_files: Sequence[str],
    label_files: Sequence[str] | None,
    *,
    batch_size: int,
    transform: VolumeTransform,
    has_channel: bool,
    shuffle: bool = False,
    num_threads: int = 2,
    device_id: int | None = None,
    seed: int = 0,
    shard_id: int = 0,
    num_shards: int = 1,
    reader_name: str = "Reader",
    **pipeline_kwargs: Any,
) -> Any:
    """A DALI pipeline reading ``.npy`` volumes (and label maps) with ``readers.numpy``, cropped and flipped together.

    Image and label come from two readers with the same file count, shards, seed and shuffle, so they stay paired.
    Outputs: ``image`` float32 ``[C, D, H, W]`` and, with ``label_files``, ``label`` int64 ``[C, D, H, W]``.

    Args:
        image_files: ``.npy`` arrays ``[D, H, W]`` or ``[C, D, H, W]``.
        label_files: ``.npy`` label maps, one per image with its spatial shape, or ``None``.
        batch_size: samples per batch.
        transform: crop, flips and normalisation.
        has_channel: the arrays are 4-d ``[C, D, H, W]`` (otherwise a channel axis is added).
        shuffle: a new permutation of all volumes each epoch.
        num_threads: DALI's CPU worker threads.
        device_id: ``None`` for a CPU pipeline, a CUDA index to crop, flip and normalise on the GPU.
        seed: as in :func:`image_folder_pipeline`.
        shard_id: this process's shard.
        num_shards: the number of shards.
        reader_name: the image reader's name (the label reader is ``reader_name + "_label"``).
        **pipeline_kwargs: more ``nvidia.dali.Pipeline`` arguments, as in :func:`image_folder_pipeline`.

    Returns:
        An unbuilt ``nvidia.dali.Pipeline``.

    Raises:
        ModuleNotFoundError: DALI is not installed.
    """
    dali = require_dali("volume_pipeline")
    fn, types = dali.fn, dali.types

    t = transform

    @dali.pipeline_def
    def _volumes() -> tuple[Any, ...]:
        reader = _reader_args(shard_id, num_shards, shuffle, seed, reader_name)
        nodes = [fn.readers.numpy(files=list(image_files), **reader)]
        if label_files is not None:
            nodes.append(fn.readers.numpy(files=list(label_files), **{**reader, "name": f"{reader_name}_label"}))
        if device_id is not None:
            nodes = [n.gpu() for n in nodes]
        crop: dict[str, Any] = {}
        if t.roi_size is not None:
            crop = {"crop": t.roi_size}
            if t.train:  # one draw per axis, shared by image and label
                crop.update({f"crop_pos_{a}": fn.random.uniform(range=(0.0, 1.0)) for a in "zyx"})
        flips: dict[str, Any] = {}
        if t.train:
            flips = {k: fn.random.coin_flip(probability=0.5) for k in ("depthwise", "vertical", "horizontal")}
        nodes = [_volume_ops(n, has_channel, crop, flips) for n in nodes]
        image = (fn.cast(nodes[0], dtype=types.FLOAT) - t.mean) * (1.0 / t.std)
        if len(nodes) == 1:
            return (image,)
        return image, fn.cast(nodes[1], dtype=types.INT64)

    return _volumes(
        batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed + shard_id, **pipeline_kwargs
    )
