"""Ignite's ``ConfusionMatrix`` with a fused, sync-free update."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from ignite.metrics import ConfusionMatrix as _IgniteConfusionMatrix
from ignite.metrics.metric import reinit__is_reduced

from hotloop.ops.stats import confusion_matrix

__all__ = ["ConfusionMatrix"]


class ConfusionMatrix(_IgniteConfusionMatrix):
    """``ignite.metrics.ConfusionMatrix`` (same arguments, state, ``compute`` and helpers: ``IoU``, ``mIoU``,
    ``DiceCoefficient``, ``cmAccuracy`` accept it) whose update is :func:`hotloop.ops.confusion_matrix`.

    Ignite's update takes the argmax of ``y_pred`` into a new tensor and drops labels outside ``[0, C)`` with a boolean
    index, which reads the mask's count on the host (a sync on CUDA). This one runs one fused pass (Triton on CUDA)
    or the chunked torch path, with the same counts and no sync. Keep ``device`` equal to the inputs' device: a CPU
    state with CUDA inputs copies the matrix to the host every update, as Ignite does.

    Args:
        num_classes: Number of classes, above 1.
        average: ``None``, ``"samples"``, ``"recall"`` or ``"precision"`` (Ignite's).
        output_transform: Maps the engine's output to ``(y_pred, y)``: scores ``[B, C, ...]`` and labels ``[B, ...]``.
        device: Where the matrix lives (Ignite's default: CPU).
        skip_unrolling: Ignite's ``skip_unrolling``.

    Examples:
        >>> from hotloop.metrics import ConfusionMatrix
        >>> metric = ConfusionMatrix(num_classes=2)
        >>> metric.update((torch.tensor([[3.0, 0.0], [1.0, 2.0]]), torch.tensor([0, 0])))
        >>> metric.compute()
        tensor([[1, 1],
                [0, 0]])
    """

    @reinit__is_reduced
    def update(self, output: Sequence[torch.Tensor]) -> None:
        """Adds the batch's confusion matrix.

        Args:
            output: ``(y_pred, y)``, shapes as Ignite's ``ConfusionMatrix`` checks them.
        """
        self._check_shape(output)
        y_pred, y = output[0].detach(), output[1].detach()
        self._num_examples += y_pred.shape[0]
        matrix = confusion_matrix(y_pred, y, self.num_classes)
        self.confusion_matrix += matrix.to(self.confusion_matrix)
