"""Segmentation metrics as Ignite metrics, accumulated on the device from fused one-pass statistics.

- :class:`MeanDice`, :class:`MeanIoU`: MONAI's ``DiceMetric`` / ``MeanIoU`` numbers with the API of MONAI's Ignite
  handlers; with ``activation="softmax"`` they read logits and label maps directly (no postprocessing, no one-hot).
- :class:`ConfusionMatrix`, :class:`Accuracy`: Ignite's classes with a fused update that never syncs.

All subclass ``ignite.metrics.Metric`` (the last two, Ignite's own classes), so they attach to any Ignite or hotloop
engine, reduce across processes through ``ignite.distributed`` and work with Ignite's handlers.
"""

from hotloop.metrics.accuracy import Accuracy
from hotloop.metrics.confusion_matrix import ConfusionMatrix
from hotloop.metrics.overlap import MeanDice, MeanIoU

__all__ = ["Accuracy", "ConfusionMatrix", "MeanDice", "MeanIoU"]
