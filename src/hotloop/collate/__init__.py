"""Per-sample decollation of collated batches, and its gathering across DDP ranks.

- :func:`decollate_batch`: ``monai.data.decollate_batch``'s semantics, run by a native module (C++, ``csrc/``) with
  a pure-Python reference beside it.
- :func:`gather_samples`: per-rank per-sample outputs gathered over ``ignite.distributed``, without
  ``DistributedSampler``'s padding, in dataset order.
"""

from hotloop.collate.decollate import HAS_NATIVE, decollate_batch
from hotloop.collate.distributed import gather_samples

__all__ = ["HAS_NATIVE", "decollate_batch", "gather_samples"]
