"""Datasets on disk: class-per-folder image trees, lists of ``.npy`` volumes, scikit-learn's digits written as files.

Both backends (DALI and the torch ``DataLoader``) read the file lists made here, so they see the same files in the
same order with the same labels, and a bad folder fails here with a message that says what is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hotloop._optional import PILLOW, SKLEARN, require

__all__ = ["IMAGE_EXTENSIONS", "list_image_folder", "list_volumes", "write_digits_folder"]

#: File endings taken as images in a class folder (lower-cased before comparison).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_FORMATS = {"png": ("PNG", ".png"), "jpg": ("JPEG", ".jpg"), "jpeg": ("JPEG", ".jpg")}


def _existing_dir(root: str | os.PathLike, what: str) -> Path:
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"{what} should be a path (str or os.PathLike), got {type(root).__name__}: {root!r}")
    path = Path(root)
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    if not path.is_dir():
        raise NotADirectoryError(f"{what} {str(path)!r} is not a folder")
    return path


def _class_key(name: str) -> tuple[int, int | str]:
    # Numeric class folders ("2" before "10") sort by value, as people number them; others alphabetically.
    return (0, int(name)) if name.isdigit() else (1, name)


def list_image_folder(root: str | os.PathLike) -> tuple[list[str], list[int], list[str]]:
    """The images of a class-per-folder tree (``root/<class>/<file>``), with integer labels.

    Classes are the sub-folders of ``root`` (numeric names by value, then the others alphabetically); label ``i`` is
    the ``i``-th class. Files are sorted by name within a class. Files whose ending is not in
    :data:`IMAGE_EXTENSIONS` and hidden files are ignored.

    Args:
        root: the folder holding one sub-folder per class.

    Returns:
        ``(files, labels, classes)``: absolute file paths, their labels, and the class names in label order.

    Raises:
        TypeError: ``root`` is not a path.
        FileNotFoundError: ``root`` does not exist.
        NotADirectoryError: ``root`` is a file.
        ValueError: ``root`` has no class folder, or no image in any of them.

    Examples:
        .. code-block:: python

            files, labels, classes = list_image_folder("digits/")  # digits/0/0.png, digits/1/1.png, ...
    """
    path = _existing_dir(root, "image folder")
    classes = sorted((p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")), key=_class_key)
    if not classes:
        raise ValueError(f"image folder {str(path)!r} has no class sub-folder; expected root/<class>/<image files>")
    files: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        for entry in sorted((path / name).iterdir()):
            if entry.is_file() and not entry.name.startswith(".") and entry.suffix.lower() in IMAGE_EXTENSIONS:
                files.append(str(entry.resolve()))
                labels.append(label)
    if not files:
        raise ValueError(
            f"image folder {str(path)!r} has class folders {classes[:5]} but no image file in them "
            f"(looked for {', '.join(IMAGE_EXTENSIONS)})"
        )
    return files, labels, classes


def list_volumes(source: str | os.PathLike | Sequence[str | os.PathLike], what: str = "images") -> list[str]:
    """The ``.npy`` files of a folder (sorted by name), or a list of ``.npy`` files checked to exist.

    Args:
        source: a folder, or a sequence of file paths.
        what: what the files are, for error messages.

    Returns:
        Absolute file paths.

    Raises:
        TypeError: ``source`` is neither a path nor a sequence of paths.
        FileNotFoundError: the folder or a listed file does not exist.
        ValueError: no ``.npy`` file was found, or a listed file is not ``.npy``.
    """
    if isinstance(source, (str, os.PathLike)):
        folder = _existing_dir(source, f"{what} folder")
        files = sorted(str(p.resolve()) for p in folder.iterdir() if p.is_file() and p.suffix == ".npy")
        if not files:
            raise ValueError(f"{what} folder {str(folder)!r} has no .npy file")
        return files
    if not isinstance(source, Sequence) or not all(isinstance(f, (str, os.PathLike)) for f in source):
        raise TypeError(f"{what} should be a folder or a sequence of .npy file paths, got {source!r}")
    if not source:
        raise ValueError(f"{what} is an empty list; expected .npy file paths")
    out = []
    for f in source:
        p = Path(f)
        if p.suffix != ".npy":
            raise ValueError(f"{what}: {str(p)!r} is not a .npy file")
        if not p.is_file():
            raise FileNotFoundError(f"{what}: {str(p)!r} does not exist")
        out.append(str(p.resolve()))
    return out


def _digits(split: str | None, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Digits images as uint8 ``[N, 8, 8]`` in 0..255, their labels and their indices in ``load_digits()``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
    index = np.arange(len(images))
    if split is not None:
        order = np.random.default_rng(seed).permutation(len(images))
        n_val = int(round(len(images) * val_fraction))
        index = np.sort(order[:n_val] if split == "val" else order[n_val:])
    return images[index], digits.target[index], index


def _check_digits_args(fmt: Any, split: Any, val_fraction: Any) -> None:
    if fmt not in _FORMATS:
        raise ValueError(f"fmt should be one of {sorted(_FORMATS)}, got {fmt!r}")
    if split not in (None, "train", "val"):
        raise ValueError(f"split should be None, 'train' or 'val', got {split!r}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction should be a number strictly between 0 and 1, got {val_fraction!r}")


def write_digits_folder(
    root: str | os.PathLike,
    *,
    fmt: str = "png",
    split: str | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, Any]:
    """Writes scikit-learn's digits (8x8 grayscale) as image files in a class-per-folder tree.

    Pixel values 0..16 are scaled to 0..255 (uint8). Image ``i`` of ``load_digits()`` is written as
    ``root/<label>/<i>.<fmt>``, so the files of the train and val splits never share a name. The split is a fixed
    random permutation drawn from ``seed``: the same arguments always write the same files.

    Args:
        root: the folder to write into (created if needed; existing files of the same name are overwritten).
        fmt: ``"png"`` (lossless) or ``"jpg"``/``"jpeg"`` (quality 95).
        split: ``None`` for all 1797 images, ``"train"`` or ``"val"`` for one part of the split.
        val_fraction: the share of images in the ``"val"`` split.
        seed: the seed of the split's permutation.

    Returns:
        ``{"root": str, "count": int, "per_class": {label: count}, "classes": [label, ...]}``.

    Raises:
        ValueError: ``fmt``, ``split`` or ``val_fraction`` is not one of the accepted values.
        ModuleNotFoundError: scikit-learn or Pillow is not installed (``pip install 'hotloop[bench]'``).

    Examples:
        .. code-block:: python

            import tempfile
            from hotloop.data import write_digits_folder

            info = write_digits_folder(tempfile.mkdtemp(), fmt="png", split="val")
            info["count"]  # 359
    """
    _check_digits_args(fmt, split, val_fraction)
    require("write_digits_folder", SKLEARN, PILLOW, extra="bench")
    from PIL import Image

    pil_format, suffix = _FORMATS[fmt]
    images, labels, index = _digits(split, val_fraction, seed)
    out = Path(root)
    per_class: dict[int, int] = {}
    for image, label, i in zip(images, labels, index):
        folder = out / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        options = {"quality": 95} if pil_format == "JPEG" else {}
        Image.fromarray(image).save(folder / f"{int(i)}{suffix}", format=pil_format, **options)
        per_class[int(label)] = per_class.get(int(label), 0) + 1
    return {
        "root": str(out),
        "count": len(images),
        "per_class": dict(sorted(per_class.items())),
        "classes": sorted(per_class),
    }
