"""The transforms that both backends apply, described once: sizes, crops, flips and normalisation.

A DALI pipeline (:mod:`hotloop.data.pipelines`) and a torch ``Dataset`` (:mod:`hotloop.data.torch_loader`) are built
from the same :class:`ImageTransform` / :class:`VolumeTransform`, so that with augmentations off both give the same
tensors from the same files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ImageTransform", "VolumeTransform"]


def _pair(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, Sequence)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ValueError(f"{name} should be a positive int or a pair of positive ints (H, W), got {value!r}")
    return int(value[0]), int(value[1])


def _per_channel(value: Any, channels: int, name: str, default: float) -> tuple[float, ...]:
    if value is None:
        return (default,) * channels
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, Sequence) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        raise TypeError(f"{name} should be a number or a sequence of numbers, got {value!r}")
    if len(value) == 1:
        value = tuple(value) * channels
    if len(value) != channels:
        raise ValueError(f"{name} should have 1 or {channels} values (one per channel), got {len(value)}: {value!r}")
    return tuple(float(v) for v in value)


@dataclass(frozen=True)
class ImageTransform:
    """Decode → resize → (random crop + flip when training) → ``(x / 255 - mean) / std`` as float32 ``[C, H, W]``.

    Evaluation resizes straight to ``image_size``. Training resizes to ``image_size`` plus an eighth (at least one
    pixel) on each side, then takes a random ``image_size`` crop and flips it left-right with probability 0.5.

    Args:
        image_size: output ``(H, W)``.
        train: apply the random crop and flip.
        mean: per-channel mean on the 0..1 scale (torchvision's convention); ``None`` for 0.
        std: per-channel standard deviation on the 0..1 scale; ``None`` for 1 (outputs in [0, 1]).
        grayscale: decode to one channel; otherwise to three (RGB; a grayscale file is replicated).
    """

    image_size: tuple[int, int]
    train: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    grayscale: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", _pair(self.image_size, "image_size"))
        object.__setattr__(self, "mean", _per_channel(self.mean, self.channels, "mean", 0.0))
        std = _per_channel(self.std, self.channels, "std", 1.0)
        if any(s <= 0 for s in std):
            raise ValueError(f"std should be positive, got {std}")
        object.__setattr__(self, "std", std)

    @property
    def channels(self) -> int:
        """1 for grayscale, 3 for RGB."""
        return 1 if self.grayscale else 3

    @property
    def resize_size(self) -> tuple[int, int]:
        """``(H, W)`` that decoded images are resized to before the (random) crop."""
        h, w = self.image_size
        return (h + max(1, h // 8), w + max(1, w // 8)) if self.train else (h, w)

    @property
    def mean255(self) -> list[float]:
        """The mean on the 0..255 scale of decoded pixels."""
        return [m * 255.0 for m in self.mean or ()]

    @property
    def std255(self) -> list[float]:
        """The standard deviation on the 0..255 scale of decoded pixels."""
        return [s * 255.0 for s in self.std or ()]


@dataclass(frozen=True)
class VolumeTransform:
    """Channel-first float32 volumes ``[C, D, H, W]`` (and integer label maps), cropped and flipped together.

    A 3-d array ``[D, H, W]`` gains a channel axis. With ``roi_size`` the volumes are cropped to it: at a random
    position when training, in the centre otherwise. Training also flips along each spatial axis with probability
    0.5, the same flips for the image and its label. The image (not the label) is normalised as ``(x - mean) / std``.

    Args:
        roi_size: ``(D, H, W)`` of the crop, or ``None`` for whole volumes (which must then all have one shape).
        train: random crop position and flips.
        mean: subtracted from the image.
        std: the image is divided by it.
    """

    roi_size: tuple[int, int, int] | None = None
    train: bool = False
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        roi = self.roi_size
        if roi is not None:
            if (
                not isinstance(roi, Sequence)
                or len(roi) != 3
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in roi)
            ):
                raise ValueError(f"roi_size should be None or three positive ints (D, H, W), got {roi!r}")
            object.__setattr__(self, "roi_size", tuple(int(v) for v in roi))
        for name in ("mean", "std"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} should be a number, got {value!r}")
        if self.std <= 0:
            raise ValueError(f"std should be positive, got {self.std}")
