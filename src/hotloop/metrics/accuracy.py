"""Ignite's ``Accuracy`` with a fused, sync-free multiclass update."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from ignite.metrics import Accuracy as _IgniteAccuracy
from ignite.metrics.metric import reinit__is_reduced

from hotloop.ops.stats import class_counts

__all__ = ["Accuracy"]


class Accuracy(_IgniteAccuracy):
    """``ignite.metrics.Accuracy`` (same arguments, state and results) with a fused multiclass update.

    Multiclass input (scores ``[B, C, ...]``, labels ``[B, ...]``) is counted by :func:`hotloop.ops.class_counts`:
    one pass over the scores, no argmax tensor, no host sync. Binary and multilabel input takes Ignite's own update,
    whose input checks (``torch.equal(y, y ** 2)``) read values on the host.

    Args:
        output_transform: Maps the engine's output to ``(y_pred, y)``.
        is_multilabel: Ignite's ``is_multilabel``.
        device: Where the count lives (Ignite's default: CPU; use the inputs' device for sync-free updates).
        skip_unrolling: Ignite's ``skip_unrolling``.

    Examples:
        >>> from hotloop.metrics import Accuracy
        >>> metric = Accuracy()
        >>> metric.update((torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), torch.tensor([0, 0, 0])))
        >>> metric.compute()
        0.6666666666666666
    """

    @reinit__is_reduced
    def update(self, output: Sequence[torch.Tensor]) -> None:
        """Counts correct predictions of one batch.

        Args:
            output: ``(y_pred, y)``, shapes as Ignite's ``Accuracy`` checks them.
        """
        self._check_shape(output)
        self._check_type(output)
        if self._type != "multiclass":
            super().update(output)
            return
        y_pred, y = output[0].detach(), output[1].detach()
        correct = class_counts(y_pred, y, activation="softmax").tp.sum()
        self._num_correct += correct.to(self._device)
        self._num_examples += y.numel()
