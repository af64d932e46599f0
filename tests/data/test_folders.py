"""Tests of ``hotloop.data.folders``: the digits writer and the folder listings, bad input included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from hotloop.data import list_image_folder, list_volumes, write_digits_folder


def test_digits_png_are_the_digits_scaled_to_uint8(digits_png):
    files, labels, classes = list_image_folder(digits_png["root"])
    assert classes == [str(c) for c in range(10)] and len(files) == digits_png["count"]
    assert sum(digits_png["per_class"].values()) == digits_png["count"]
    digits = load_digits()
    for f, label in list(zip(files, labels))[::7]:
        index = int(Path(f).stem)
        pixels = np.asarray(Image.open(f))
        assert pixels.dtype == np.uint8 and pixels.shape == (8, 8)
        np.testing.assert_array_equal(pixels, np.rint(digits.images[index] * 255 / 16).astype(np.uint8))
        assert label == digits.target[index]


def test_splits_are_disjoint_deterministic_and_complete(tmp_path):
    train = write_digits_folder(tmp_path / "train", split="train", val_fraction=0.1, seed=3)
    val = write_digits_folder(tmp_path / "val", split="val", val_fraction=0.1, seed=3)
    again = write_digits_folder(tmp_path / "again", split="val", val_fraction=0.1, seed=3)
    names = {p: {f.name for f in (tmp_path / p).rglob("*.png")} for p in ("train", "val", "again")}
    assert not names["train"] & names["val"] and len(names["train"] | names["val"]) == 1797
    assert names["val"] == names["again"] and val["per_class"] == again["per_class"]
    assert train["count"] + val["count"] == 1797 and val["count"] == 180


@pytest.mark.parametrize(
    "kwargs, match",
    [({"fmt": "gif"}, "fmt"), ({"split": "test"}, "split"), ({"split": "val", "val_fraction": 1.0}, "val_fraction")],
)
def test_write_digits_rejects_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_digits_folder(tmp_path, **kwargs)


def test_bad_image_folders_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_image_folder(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        list_image_folder(tmp_path / "file.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class sub-folder"):
        list_image_folder(tmp_path / "empty")
    (tmp_path / "empty" / "cat").mkdir()
    (tmp_path / "empty" / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="no image file"):
        list_image_folder(tmp_path / "empty")
    with pytest.raises(TypeError, match="path"):
        list_image_folder(3)  # type: ignore[arg-type]


def test_numeric_classes_sort_by_value(tmp_path):
    for name in ("10", "2", "b", "a"):
        (tmp_path / name).mkdir()
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / name / "x.png")
    assert list_image_folder(tmp_path)[2] == ["2", "10", "a", "b"]


def test_list_volumes(volumes, tmp_path):
    images, _ = volumes
    files = list_volumes(images)
    assert [Path(f).name for f in files] == [f"{i:02d}.npy" for i in range(7)]
    assert list_volumes(files[:2]) == files[:2]
    with pytest.raises(ValueError, match="no .npy"):
        list_volumes(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_volumes([str(tmp_path / "gone.npy")])
    with pytest.raises(ValueError, match="not a .npy"):
        list_volumes([str(tmp_path / "a.png")])
    with pytest.raises(ValueError, match="empty"):
        list_volumes([])


def test_write_digits_without_sklearn_or_pillow_names_both_and_the_extra(hide_packages, tmp_path):
    hide_packages("sklearn", "PIL")
    with pytest.raises(ModuleNotFoundError) as raised:
        write_digits_folder(tmp_path / "digits")
    assert str(raised.value) == (
        "write_digits_folder needs scikit-learn and Pillow, which are not installed: pip install 'hotloop[bench]'"
    )
    assert not (tmp_path / "digits").exists()
