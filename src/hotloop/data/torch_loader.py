"""The DataLoader fallback: the same inputs, transforms, sharding and exact epochs as the DALI pipelines, in torch.

Decoding is PIL's (images) or NumPy's (``.npy`` volumes) in ``DataLoader`` worker processes; batches are pinned when
CUDA is available, workers persist between epochs, and on a CUDA ``device`` batches arrive through hotloop's
:class:`~hotloop.step.prefetch.DevicePrefetcher` (the next batch copied on a side stream while the step runs).

Sharding follows DALI's readers exactly: the epoch's order (a permutation drawn from ``seed + epoch`` when shuffling)
is cut into ``num_shards`` contiguous parts ``[floor(i·N/S), floor((i+1)·N/S))`` and every shard yields the same
number of batches. The permutations themselves are torch's, not DALI's: the two backends shuffle differently.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from hotloop._optional import PILLOW, require
from hotloop.data.transforms import ImageTransform, VolumeTransform

__all__ = ["ImageFolderDataset", "ShardedBatchSampler", "TorchLoader", "VolumeDataset"]


def _anchor(position: float, size: int, crop: int) -> int:
    # DALI's crop anchor: position · (size − crop), rounded half away from zero.
    return int(math.floor(position * (size - crop) + 0.5))


def _sample_rng(seed: int, epoch: int, index: int) -> torch.Generator:
    # One generator per (seed, epoch, sample): the draws do not depend on worker count or batch order.
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_003 + index)


class ShardedBatchSampler:
    """Batches of ``(index, epoch)`` keys for one shard, cut as DALI's readers cut shards.

    Args:
        size: the number of samples in the whole data set.
        batch_size: samples per batch.
        shuffle: a new permutation (``torch.randperm`` seeded by ``seed + epoch``) each epoch.
        seed: the permutation seed, the same on every shard.
        shard_id: this shard.
        num_shards: the number of shards.
        drop_last: leave out an incomplete last batch (every shard then yields ``(size // num_shards) // batch_size``
            batches); otherwise every shard yields ``ceil(ceil(size / num_shards) / batch_size)``, the last ones
            partial (possibly empty on a shorter shard, so that shards keep step).
    """

    def __init__(
        self, size: int, batch_size: int, *, shuffle: bool, seed: int, shard_id: int, num_shards: int, drop_last: bool
    ) -> None:
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.shard_id, self.num_shards, self.drop_last = shard_id, num_shards, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch whose permutation (and augmentation draws) the next iteration uses."""
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return (self.size // self.num_shards) // self.batch_size
        return math.ceil(math.ceil(self.size / self.num_shards) / self.batch_size)

    def shard(self) -> list[int]:
        """The sample indices of this shard in this epoch, in reading order."""
        if self.shuffle:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        else:
            order = list(range(self.size))
        begin = self.shard_id * self.size // self.num_shards
        end = (self.shard_id + 1) * self.size // self.num_shards
        return order[begin:end]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        shard, b, epoch = self.shard(), self.batch_size, self.epoch
        for i in range(len(self)):
            yield [(index, epoch) for index in shard[i * b : (i + 1) * b]]


class ImageFolderDataset(Dataset):
    """Image files decoded by PIL and transformed as :class:`~hotloop.data.transforms.ImageTransform` says.

    Items are looked up by ``(index, epoch)`` (or a bare index, epoch 0); the epoch seeds the augmentations.

    Args:
        files: image file paths.
        labels: one integer label per file.
        transform: sizes, augmentations and normalisation.
        seed: seeds the augmentations.

    Raises:
        ModuleNotFoundError: Pillow is not installed (``pip install 'hotloop[images]'``).
    """

    def __init__(self, files: Sequence[str], labels: Sequence[int], transform: ImageTransform, seed: int = 0) -> None:
        # Checked here, in the main process: a worker process would otherwise fail on its first image.
        require("ImageFolderDataset (decoding images with PIL)", PILLOW)
        self.files, self.labels, self.transform, self.seed = list(files), list(labels), transform, seed
        self._mean = torch.tensor(transform.mean255).view(-1, 1, 1)
        self._inv_std = 1.0 / torch.tensor(transform.std255).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.files)

    def _decode(self, path: str) -> torch.Tensor:
        from PIL import Image

        t = self.transform
        try:
            with Image.open(path) as file:
                img = file.convert("L" if t.grayscale else "RGB")
            h, w = t.resize_size
            if img.size != (w, h):
                img = img.resize((w, h), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
        except (OSError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError; truncated data too
            raise RuntimeError(f"cannot decode image file {path!r}: {e}") from e
        return torch.from_numpy(array.reshape(h, w, -1).copy()).permute(2, 0, 1)  # [C, H', W'] uint8

    def _augment(self, image: torch.Tensor, epoch: int, index: int) -> torch.Tensor:
        rng = _sample_rng(self.seed, epoch, index)
        x_pos, y_pos, flip = torch.rand(3, generator=rng).tolist()
        (h, w), (rh, rw) = self.transform.image_size, self.transform.resize_size
        y0, x0 = _anchor(y_pos, rh, h), _anchor(x_pos, rw, w)
        image = image[:, y0 : y0 + h, x0 : x0 + w]
        return image.flip(-1) if flip < 0.5 else image

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        image = self._decode(self.files[index])
        if self.transform.train:
            image = self._augment(image, epoch, index)
        # Same arithmetic as DALI's crop_mirror_normalize: (x - mean) * (1 / std), in float32.
        return (image.float() - self._mean) * self._inv_std, self.labels[index]


def _load_array(path: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise RuntimeError(f"cannot read .npy file {path!r}: {e}") from e


class VolumeDataset(Dataset):
    """``.npy`` volumes (and label maps) transformed as :class:`~hotloop.data.transforms.VolumeTransform` says.

    Args:
        image_files: ``.npy`` arrays ``[D, H, W]`` or ``[C, D, H, W]``.
        label_files: label maps, one per image, or ``None``.
        transform: crop, flips and normalisation.
        seed: seeds the random crop positions and flips.
    """

    def __init__(
        self, image_files: Sequence[str], label_files: Sequence[str] | None, transform: VolumeTransform, seed: int = 0
    ) -> None:
        self.image_files, self.transform, self.seed = list(image_files), transform, seed
        self.label_files = None if label_files is None else list(label_files)

    def __len__(self) -> int:
        return len(self.image_files)

    def _arrays(self, index: int) -> list[torch.Tensor]:
        files = [self.image_files[index]] + ([] if self.label_files is None else [self.label_files[index]])
        out = []
        for f in files:
            t = torch.from_numpy(_load_array(f))
            out.append(t if t.ndim == 4 else t.unsqueeze(0))  # [C, D, H, W]
        return out

    def _crop_and_flip(self, arrays: list[torch.Tensor], epoch: int, index: int) -> list[torch.Tensor]:
        t = self.transform
        # Draw order matches the pipeline's: crop positions (z, y, x) and then flips (D, H, W).
        draws = torch.rand(6, generator=_sample_rng(self.seed, epoch, index)).tolist() if t.train else [0.5] * 3
        if t.roi_size is not None:
            spatial = arrays[0].shape[1:]
            starts = [_anchor(p, s, r) for p, s, r in zip(draws[:3], spatial, t.roi_size)]
            window = (slice(None),) + tuple(slice(a, a + r) for a, r in zip(starts, t.roi_size))
            arrays = [a[window] for a in arrays]
        if t.train:
            dims = [d + 1 for d, p in enumerate(draws[3:]) if p < 0.5]
            arrays = [a.flip(dims) for a in arrays] if dims else arrays
        return arrays

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, ...]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        arrays = self._crop_and_flip(self._arrays(index), epoch, index)
        t = self.transform
        image = (arrays[0].float() - t.mean) * (1.0 / t.std)
        return (image,) + tuple(a.to(torch.int64).contiguous() for a in arrays[1:])


class _Collate:
    """Stacks samples into ``{name: tensor}``; an empty batch (a shorter shard's last one) gets 0-row tensors."""

    def __init__(self, keys: Sequence[str], empty: Sequence[tuple[tuple[int, ...], torch.dtype]]) -> None:
        self.keys, self.empty = tuple(keys), list(empty)

    def __call__(self, samples: list[tuple[Any, ...]]) -> dict[str, torch.Tensor]:
        if not samples:
            return {k: torch.empty((0, *shape), dtype=dtype) for k, (shape, dtype) in zip(self.keys, self.empty)}
        out = {}
        for k, column in zip(self.keys, zip(*samples)):
            first = column[0]
            out[k] = torch.stack(column) if isinstance(first, torch.Tensor) else torch.tensor(column, dtype=torch.int64)
        return out


class TorchLoader:
    """Epochs of batches from a ``DataLoader`` over a dataset and a :class:`ShardedBatchSampler`.

    The counterpart of :class:`~hotloop.data.DALILoader`: ``len()`` is stable, every ``iter()`` starts a new epoch
    (the next permutation), batches are dicts keyed by ``keys`` or tuples.

    Args:
        dataset: a map-style dataset indexed by the sampler's ``(index, epoch)`` keys.
        batch_sampler: the shard's batches.
        keys: the names of the dataset's outputs, in order.
        empty: ``(shape, dtype)`` of one sample of each output, for empty batches.
        num_workers: ``DataLoader`` worker processes (0: decode in the main process).
        device: a CUDA device to prefetch batches to, or ``None``.
        as_tuple: yield tuples instead of dicts.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_sampler: ShardedBatchSampler,
        keys: Sequence[str],
        empty: Sequence[tuple[tuple[int, ...], torch.dtype]],
        *,
        num_workers: int = 0,
        device: str | torch.device | None = None,
        as_tuple: bool = False,
    ) -> None:
        self.batch_sampler, self.keys, self.as_tuple = batch_sampler, tuple(keys), as_tuple
        self.device = None if device is None else torch.device(device)
        self.loader = DataLoader(
            dataset,
            batch_sampler=batch_sampler,  # type: ignore[arg-type]
            num_workers=num_workers,
            collate_fn=_Collate(keys, empty),
            pin_memory=torch.cuda.is_available(),
            persistent_workers=num_workers > 0,
        )
        self.epoch = 0

    @property
    def batch_size(self) -> int:
        """Samples per full batch."""
        return self.batch_sampler.batch_size

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[Any]:
        self.batch_sampler.set_epoch(self.epoch)
        self.epoch += 1
        batches: Iterator[Any] = iter(self.loader)
        if self.as_tuple:
            keys = self.keys
            batches = (tuple(b[k] for k in keys) for b in batches)
        if self.device is not None and self.device.type == "cuda":
            from hotloop.step.prefetch import DevicePrefetcher

            batches = DevicePrefetcher(batches, self.device)
        return batches

    def __repr__(self) -> str:
        return f"{type(self).__name__}(keys={self.keys}, batch_size={self.batch_size}, len={len(self)})"
