"""Input pipelines: DALI loaders with exact epochs, and their DataLoader fallback.

- :func:`image_folder_loader`, :func:`volume_loader`: one call builds a loader of a class-per-folder image tree or
  of ``.npy`` volumes, as a DALI pipeline (CPU or GPU operators) or a torch ``DataLoader`` with the same transforms.
- :class:`DALILoader`: wraps DALI's ``DALIGenericIterator`` around any pipeline with a named reader (your own
  ``@pipeline_def`` included) and gives the engines exact epochs, a stable ``len()`` and dict or tuple batches.
- :func:`write_digits_folder`: scikit-learn's digits as PNG/JPEG files, for examples and tests.

NVIDIA DALI is optional (``pip install 'hotloop[dali]'``); :data:`HAS_DALI` says whether it is installed. Importing
this package does not import DALI. See ``docs/dali.md``.
"""

from hotloop.data.factories import image_folder_loader, resolve_backend, volume_loader
from hotloop.data.folders import IMAGE_EXTENSIONS, list_image_folder, list_volumes, write_digits_folder
from hotloop.data.loader import DALILoader
from hotloop.data.pipelines import HAS_DALI, dali_device_id, image_folder_pipeline, require_dali, volume_pipeline
from hotloop.data.torch_loader import ShardedBatchSampler, TorchLoader
from hotloop.data.transforms import ImageTransform, VolumeTransform

__all__ = [
    "DALILoader",
    "HAS_DALI",
    "IMAGE_EXTENSIONS",
    "ImageTransform",
    "ShardedBatchSampler",
    "TorchLoader",
    "VolumeTransform",
    "dali_device_id",
    "image_folder_loader",
    "image_folder_pipeline",
    "list_image_folder",
    "list_volumes",
    "require_dali",
    "resolve_backend",
    "volume_loader",
    "volume_pipeline",
    "write_digits_folder",
]
