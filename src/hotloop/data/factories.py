"""``image_folder_loader`` and ``volume_loader``: one call builds a DALI loader or its DataLoader fallback.

``backend="dali"`` builds a DALI pipeline (:mod:`hotloop.data.pipelines`) wrapped in :class:`~hotloop.data.DALILoader`;
``backend="torch"`` the same transforms in a ``DataLoader`` (:class:`~hotloop.data.torch_loader.TorchLoader`);
``backend="auto"`` takes DALI when it is installed. Both read the same file list in the same order, cut the same
shards, give ``len()`` batches per epoch and batches of the same keys, shapes and dtypes.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hotloop._optional import PILLOW, require
from hotloop.data.folders import list_image_folder, list_volumes
from hotloop.data.pipelines import HAS_DALI, dali_device_id, image_folder_pipeline, require_dali, volume_pipeline
from hotloop.data.torch_loader import ImageFolderDataset, ShardedBatchSampler, TorchLoader, VolumeDataset
from hotloop.data.transforms import ImageTransform, VolumeTransform

__all__ = ["image_folder_loader", "resolve_backend", "resolve_shard", "volume_loader"]

_BACKENDS = ("auto", "dali", "torch")


def resolve_backend(backend: str) -> str:
    """``"dali"`` or ``"torch"`` for a ``backend`` argument.

    Args:
        backend: ``"auto"`` (DALI when installed), ``"dali"`` or ``"torch"``.

    Returns:
        The backend to use.

    Raises:
        ValueError: ``backend`` is none of the three.
        ModuleNotFoundError: ``"dali"`` is asked for and DALI is not installed.
    """
    if backend not in _BACKENDS:
        raise ValueError(f"backend should be one of {_BACKENDS}, got {backend!r}")
    if backend == "dali":
        require_dali("backend='dali'")
    if backend == "auto":
        return "dali" if HAS_DALI else "torch"
    return backend


def _dali_threads(num_threads: int) -> int:
    if num_threads < 1:
        raise ValueError(f"a DALI pipeline needs num_threads >= 1, got {num_threads} (0 is for backend='torch')")
    return num_threads


def resolve_shard(shard_id: int | None, num_shards: int | None) -> tuple[int, int]:
    """``(shard_id, num_shards)``, each defaulting to ``ignite.distributed``'s rank and world size.

    Args:
        shard_id: this process's shard, or ``None`` for ``idist.get_rank()``.
        num_shards: the number of shards, or ``None`` for ``idist.get_world_size()``.

    Returns:
        The checked pair.

    Raises:
        ValueError: they are not ints with ``0 <= shard_id < num_shards``.
    """
    import ignite.distributed as idist

    shard = idist.get_rank() if shard_id is None else shard_id
    shards = idist.get_world_size() if num_shards is None else num_shards
    for name, value in (("shard_id", shard), ("num_shards", shards)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} should be an int or None, got {value!r}")
    if shards < 1 or not 0 <= shard < shards:
        raise ValueError(f"expected 0 <= shard_id < num_shards, got shard_id={shard}, num_shards={shards}")
    return shard, shards


def _check_common(batch_size: Any, num_threads: Any, seed: Any, output_map: Any, outputs: int) -> tuple[str, ...]:
    for name, value, least in (("batch_size", batch_size, 1), ("num_threads", num_threads, 0), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} should be an int >= {least}, got {value!r}")
    if isinstance(output_map, str) or not isinstance(output_map, Sequence) or len(output_map) < outputs:
        raise ValueError(f"output_map should name the {outputs} outputs (e.g. ('image', 'label')), got {output_map!r}")
    keys = tuple(output_map[:outputs])
    if not all(isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
        raise ValueError(f"output_map should hold distinct str names, got {output_map!r}")
    return keys


def _first_image_size(path: str) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size[1], img.size[0]
    except OSError as e:
        raise RuntimeError(f"cannot read the size of image file {path!r} (image_size=None takes it): {e}") from e


class _FirstBadImage:
    """Finds the first file PIL cannot parse: DALI's decoder errors do not say which file failed."""

    def __init__(self, files: Sequence[str]) -> None:
        self.files = files

    def __call__(self) -> str | None:
        if not PILLOW.installed():  # the diagnosis is a courtesy: DALI's own error is raised either way
            return None
        from PIL import Image

        for f in self.files:
            try:
                with Image.open(f) as img:
                    img.load()
            except (OSError, ValueError) as e:
                return f"cannot decode image file {f!r}: {e}"
        return None


class _ClassLabels:
    """DALI's file reader gives int32 labels ``[B, 1]``; the engines expect int64 ``[B]`` (what a DataLoader gives)."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        batch[self.key] = batch[self.key].reshape(-1).to(torch.int64)
        return batch


def image_folder_loader(
    root: str | os.PathLike,
    *,
    batch_size: int,
    image_size: int | tuple[int, int] | None = None,
    train: bool = False,
    shuffle: bool | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    grayscale: bool = False,
    num_threads: int = 2,
    device: str | torch.device | None = None,
    backend: str = "auto",
    seed: int = 0,
    output_map: Sequence[str] = ("image", "label"),
    as_tuple: bool = False,
    shard_id: int | None = None,
    num_shards: int | None = None,
    drop_last: bool = False,
) -> Any:
    """A loader of an image-classification folder (``root/<class>/<image>``): float32 images and int64 labels.

    Batches are ``{"image": float32 [B, C, H, W], "label": int64 [B]}`` (keys from ``output_map``), or
    ``(image, label)`` with ``as_tuple=True``, which Ignite's default ``prepare_batch`` understands. Images are
    decoded, resized to ``image_size`` and normalised as ``(x / 255 - mean) / std``; with ``train=True`` they are
    resized an eighth larger, randomly cropped back to ``image_size`` and flipped left-right with probability 0.5
    (:class:`~hotloop.data.transforms.ImageTransform`). Every epoch reads each file of the shard exactly once.

    ``backend="dali"``: ``readers.file → decoders.image → resize → crop_mirror_normalize`` in a DALI pipeline, on the
    CPU (``device=None``) or, for a CUDA ``device``, decoded by the ``"mixed"`` operator and transformed on that GPU
    (batches arrive on it). ``backend="torch"``: a ``DataLoader`` with ``num_threads`` worker processes decoding with
    PIL, pinned memory when CUDA is available, persistent workers, and hotloop's device prefetcher for a CUDA
    ``device``. ``"auto"``: DALI when installed. With augmentations off both give the same tensors up to rounding
    of the resize (checked on PNG files).

    Args:
        root: the class-per-folder tree (see :func:`~hotloop.data.list_image_folder` for the label order).
        batch_size: samples per batch.
        image_size: output ``(H, W)`` (an int for square), or ``None`` for the size of the first image.
        train: random crop and flip.
        shuffle: a new order every epoch; ``None`` follows ``train``.
        mean: per-channel mean on the 0..1 scale (``None``: 0).
        std: per-channel standard deviation on the 0..1 scale (``None``: 1).
        grayscale: one channel; otherwise RGB.
        num_threads: DALI threads (at least 1), or DataLoader workers (0: decode in the main process).
        device: ``None`` for host batches, or a CUDA device for batches on it.
        backend: ``"auto"``, ``"dali"`` or ``"torch"``.
        seed: seeds the shuffle and the augmentations.
        output_map: names of the image and label outputs.
        as_tuple: yield ``(image, label)`` tuples.
        shard_id: this process's shard; ``None`` for ``ignite.distributed.get_rank()``.
        num_shards: number of shards; ``None`` for ``ignite.distributed.get_world_size()``.
        drop_last: leave out incomplete last batches instead of yielding them partial.

    Returns:
        A :class:`~hotloop.data.DALILoader` or :class:`~hotloop.data.torch_loader.TorchLoader`: an iterable with
        ``len()``, one epoch per ``iter()``.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: ``root`` has no class folder or no image, or an argument is out of range.
        ModuleNotFoundError: ``backend="dali"`` without DALI installed (``pip install 'hotloop[dali]'``), or the
            DataLoader fallback (or ``image_size=None``) without Pillow (``pip install 'hotloop[images]'``).
        RuntimeError: ``device`` is CUDA and CUDA is not available.

    Examples:
        .. code-block:: python

            loader = image_folder_loader("digits/train", batch_size=64, image_size=16, grayscale=True, train=True)
            trainer.run(loader, max_epochs=5)
    """
    keys = _check_common(batch_size, num_threads, seed, output_map, 2)
    chosen = resolve_backend(backend)
    if chosen == "torch":
        require("image_folder_loader's DataLoader fallback (backend='torch', decoding with PIL)", PILLOW)
    if image_size is None:
        require("image_folder_loader(image_size=None) (reading the first image's size with PIL)", PILLOW)
    shard, shards = resolve_shard(shard_id, num_shards)
    files, labels, _ = list_image_folder(root)
    transform = ImageTransform(
        image_size=_first_image_size(files[0]) if image_size is None else image_size,  # type: ignore[arg-type]
        train=bool(train),
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        grayscale=bool(grayscale),
    )
    shuffle = bool(train) if shuffle is None else bool(shuffle)
    if chosen == "dali":
        from hotloop.data.loader import DALILoader

        # A pipeline function, not a pipeline: DALILoader.load_state_dict() rebuilds it from a checkpoint.
        pipe = functools.partial(
            image_folder_pipeline, files, labels, batch_size=batch_size, transform=transform, shuffle=shuffle,
            num_threads=_dali_threads(num_threads), device_id=dali_device_id(device), seed=seed, shard_id=shard,
            num_shards=shards, enable_checkpointing=True,
        )  # fmt: skip
        return DALILoader(
            pipe, keys, reader_name="Reader", last_batch="drop" if drop_last else "partial", as_tuple=as_tuple,
            postprocess=_ClassLabels(keys[1]), diagnose=_FirstBadImage(files),
        )  # fmt: skip
    dali_device_id(device)  # the same device checks as the DALI path
    sampler = ShardedBatchSampler(
        len(files), batch_size, shuffle=shuffle, seed=seed, shard_id=shard, num_shards=shards, drop_last=drop_last
    )
    h, w = transform.image_size
    empty = [((transform.channels, h, w), torch.float32), ((), torch.int64)]
    dataset = ImageFolderDataset(files, labels, transform, seed=seed)
    return TorchLoader(dataset, sampler, keys, empty, num_workers=num_threads, device=device, as_tuple=as_tuple)


def _volume_shapes(image_files: list[str], label_files: list[str] | None) -> tuple[tuple[int, ...], bool]:
    """Checks the ``.npy`` headers (memory-mapped, no data read); returns the first image's shape and whether 4-d."""
    shapes = []
    for f in image_files + (label_files or []):
        try:
            shapes.append(np.load(f, mmap_mode="r").shape)
        except (OSError, ValueError) as e:
            raise RuntimeError(f"cannot read .npy file {f!r}: {e}") from e
    images = shapes[: len(image_files)]
    if any(len(s) not in (3, 4) for s in images) or len({len(s) for s in images}) != 1:
        raise ValueError(
            f"volumes should all be [D, H, W] or all [C, D, H, W] arrays, got shapes {sorted(set(images))}"
        )
    for f, image, label in zip(label_files or [], images, shapes[len(image_files) :]):
        if tuple(label[-3:]) != tuple(image[-3:]) or len(label) != len(image):
            raise ValueError(
                f"label {f!r} has shape {label}; expected {len(image)} dims with the image's spatial shape {image[-3:]}"
            )
    return images[0], len(images[0]) == 4


def _check_volume_sizes(image_files: list[str], transform: VolumeTransform) -> None:
    shapes = {np.load(f, mmap_mode="r").shape for f in image_files}
    roi = transform.roi_size
    if roi is None and len(shapes) != 1:
        raise ValueError(f"volumes of different shapes {sorted(shapes)} cannot be batched; pass roi_size to crop them")
    if roi is not None and any(any(s < r for s, r in zip(shape[-3:], roi)) for shape in shapes):
        raise ValueError(f"roi_size={roi} is larger than some volume (shapes {sorted(shapes)})")


def volume_loader(
    images: str | os.PathLike | Sequence[str | os.PathLike],
    labels: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    *,
    batch_size: int,
    roi_size: tuple[int, int, int] | None = None,
    train: bool = False,
    shuffle: bool | None = None,
    mean: float = 0.0,
    std: float = 1.0,
    num_threads: int = 2,
    device: str | torch.device | None = None,
    backend: str = "auto",
    seed: int = 0,
    output_map: Sequence[str] = ("image", "label"),
    as_tuple: bool = False,
    shard_id: int | None = None,
    num_shards: int | None = None,
    drop_last: bool = False,
) -> Any:
    """A loader of ``.npy`` volumes and label maps for 3D segmentation: ``{"image": [B, C, D, H, W], "label": ...}``.

    Images come out float32, normalised as ``(x - mean) / std``; labels int64 with the same layout; a 3-d array
    gains a channel axis. With ``roi_size`` the volumes are cropped (at random when ``train``, centred otherwise);
    ``train`` also flips along each spatial axis with probability 0.5, identically for image and label
    (:class:`~hotloop.data.transforms.VolumeTransform`). ``backend="dali"`` reads with ``readers.numpy`` (two readers
    with the same shards and seed keep image and label paired) and transforms on the CPU or, for a CUDA ``device``,
    on the GPU; ``backend="torch"`` does the same with NumPy in ``DataLoader`` workers. Conventions (sharding, exact
    epochs, ``as_tuple``, ``drop_last``) are :func:`image_folder_loader`'s.

    Args:
        images: a folder of ``.npy`` files (sorted by name) or a list of them.
        labels: the label maps in the same order (a folder or a list), or ``None`` for images only.
        batch_size: samples per batch.
        roi_size: ``(D, H, W)`` crop, or ``None`` for whole volumes (then all of one shape).
        train: random crop position and flips.
        shuffle: a new order every epoch; ``None`` follows ``train``.
        mean: subtracted from the images.
        std: the images are divided by it.
        num_threads: DALI threads (at least 1), or DataLoader workers (0: decode in the main process).
        device: ``None`` for host batches, or a CUDA device.
        backend: ``"auto"``, ``"dali"`` or ``"torch"``.
        seed: seeds the shuffle and the augmentations.
        output_map: names of the image and label outputs (only the first is used without labels).
        as_tuple: yield tuples.
        shard_id: this process's shard (default: ``ignite.distributed`` rank).
        num_shards: number of shards (default: world size).
        drop_last: leave out incomplete last batches.

    Returns:
        A :class:`~hotloop.data.DALILoader` or :class:`~hotloop.data.torch_loader.TorchLoader`.

    Raises:
        FileNotFoundError: a folder or file does not exist.
        ValueError: no volumes, counts or shapes that do not match, an argument out of range.
        ModuleNotFoundError: ``backend="dali"`` without DALI installed.
    """
    image_files = list_volumes(images, "images")
    label_files = None if labels is None else list_volumes(labels, "labels")
    if label_files is not None and len(label_files) != len(image_files):
        raise ValueError(f"got {len(image_files)} images but {len(label_files)} labels; expected one label per image")
    keys = _check_common(batch_size, num_threads, seed, output_map, 1 if label_files is None else 2)
    chosen = resolve_backend(backend)
    shard, shards = resolve_shard(shard_id, num_shards)
    transform = VolumeTransform(roi_size=roi_size, train=bool(train), mean=mean, std=std)
    first, has_channel = _volume_shapes(image_files, label_files)
    _check_volume_sizes(image_files, transform)
    shuffle = bool(train) if shuffle is None else bool(shuffle)
    if chosen == "dali":
        from hotloop.data.loader import DALILoader

        pipe = functools.partial(
            volume_pipeline, image_files, label_files, batch_size=batch_size, transform=transform,
            has_channel=has_channel, shuffle=shuffle, num_threads=_dali_threads(num_threads),
            device_id=dali_device_id(device), seed=seed, shard_id=shard, num_shards=shards, enable_checkpointing=True,
        )  # fmt: skip
        return DALILoader(
            pipe, keys, reader_name="Reader", last_batch="drop" if drop_last else "partial", as_tuple=as_tuple
        )
    dali_device_id(device)
    sampler = ShardedBatchSampler(
        len(image_files), batch_size, shuffle=shuffle, seed=seed, shard_id=shard, num_shards=shards, drop_last=drop_last
    )
    spatial = transform.roi_size or tuple(first[-3:])
    channels = first[0] if has_channel else 1
    label_channels = np.load(label_files[0], mmap_mode="r").shape[0] if label_files and has_channel else 1
    empty = [((channels, *spatial), torch.float32), ((label_channels, *spatial), torch.int64)][: len(keys)]
    dataset = VolumeDataset(image_files, label_files, transform, seed=seed)
    return TorchLoader(dataset, sampler, keys, empty, num_workers=num_threads, device=device, as_tuple=as_tuple)
