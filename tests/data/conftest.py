"""Real encoded files in temporary folders: digits as PNG and JPEG class trees, volumes as ``.npy``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hotloop.data import write_digits_folder

# 90 of the 1797 digits: enough for several batches and uneven shards, quick to write and decode.
VAL_FRACTION = 0.05
N_VOLUMES = 7


@pytest.fixture(scope="session")
def digits_png(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return write_digits_folder(tmp_path_factory.mktemp("png"), fmt="png", split="val", val_fraction=VAL_FRACTION)


@pytest.fixture(scope="session")
def digits_jpg(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return write_digits_folder(tmp_path_factory.mktemp("jpg"), fmt="jpg", split="val", val_fraction=VAL_FRACTION)


@pytest.fixture(scope="session")
def volumes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """7 volumes ``[9, 10, 11]`` with values around ``100 * i`` and label maps ``image > 100 * i``."""
    root = tmp_path_factory.mktemp("volumes")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(N_VOLUMES):
        volume = rng.normal(size=(9, 10, 11)).astype(np.float32) + 100 * i
        np.save(root / "images" / f"{i:02d}.npy", volume)
        np.save(root / "labels" / f"{i:02d}.npy", (volume > 100 * i).astype(np.uint8))
    return root / "images", root / "labels"
