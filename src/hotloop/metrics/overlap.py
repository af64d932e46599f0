"""Mean Dice and mean IoU as Ignite metrics with MONAI's numbers, accumulated on the device from fused class counts.

:class:`MeanDice` and :class:`MeanIoU` take the arguments of MONAI's ``monai.handlers.MeanDice`` /
``MeanIoUHandler`` (themselves Ignite metrics) and give the numbers of ``monai.metrics.DiceMetric`` / ``MeanIoU``:
per-sample per-class scores, ``NaN`` for a class absent from the labels when ``ignore_empty`` (otherwise 1 if the
prediction is empty too, else 0), and MONAI's seven ``reduction`` modes over the non-NaN scores.

Where MONAI needs one-hot predictions and labels (``Activations`` + ``AsDiscrete`` per sample, then the metric),
these take the network's output as it is: ``activation="softmax"`` reads logits ``[B, C, *spatial]`` and labels as
a label map (or one-hot) and counts per class in one pass (:func:`hotloop.ops.class_counts`), with no one-hot tensor
and no host sync. The default ``activation=None`` takes binarized predictions, as MONAI's metrics do.

State: per-class sums and non-NaN counts and per-sample mean sums, fixed-size tensors on the inputs' device (or
``device``), summed across processes by Ignite's ``sync_all_reduce``. Reductions that return per-sample values
(``"none"``, ``"mean_channel"``, ``"sum_channel"``) and ``save_details`` also keep the ``[B, C]`` scores of every
update (on device; gathered across processes at ``compute`` with ``idist.all_gather_tensors_with_shapes``, so processes
may hold different numbers of samples, as :class:`hotloop.distributed.ExactDistributedSampler`'s shards do).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any, cast

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric
from ignite.metrics.metric import MetricUsage, reinit__is_reduced, sync_all_reduce

from hotloop.ops.stats import Activation, ClassCounts, class_counts

__all__ = ["MeanDice", "MeanIoU"]

_REDUCTIONS = ("none", "mean", "sum", "mean_batch", "sum_batch", "mean_channel", "sum_channel")
_PER_SAMPLE = ("none", "mean_channel", "sum_channel")


def _identity(output: Any) -> Any:
    return output


def _reduction_name(reduction: Any) -> str:
    name = reduction.value if isinstance(reduction, Enum) else reduction
    if name not in _REDUCTIONS:
        raise ValueError(f"reduction should be one of {_REDUCTIONS}, got {reduction!r}")
    return str(name)


def _reduce_rows(scores: torch.Tensor, reduction: str) -> torch.Tensor:
    """MONAI's ``do_metric_reduction`` over ``[N, C]`` scores for the per-sample reductions."""
    valid = ~torch.isnan(scores)
    values = torch.where(valid, scores, 0.0)
    if reduction == "none":
        return scores
    if reduction == "sum_channel":
        return values.sum(dim=1)
    count = valid.sum(dim=1)
    return torch.where(count > 0, values.sum(dim=1) / count.clamp(min=1), 0.0)  # mean_channel


class _OverlapMetric(Metric):
    """Shared state and reductions of :class:`MeanDice` and :class:`MeanIoU`; subclasses define ``_scores``."""

    # The single-channel case keeps its channel without background (MONAI's DiceMetric); MeanIoU drops it.
    _keeps_single_channel = True

    def __init__(
        self,
        include_background: bool = True,
        reduction: Any = "mean",
        num_classes: int | None = None,
        output_transform: Callable[..., Any] = _identity,
        save_details: bool = True,
        *,
        ignore_empty: bool = True,
        activation: Activation = None,
        threshold: float = 0.5,
        ignore_index: int | None = None,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        if activation not in ("softmax", "sigmoid", None):
            raise ValueError(f"activation should be 'softmax', 'sigmoid' or None, got {activation!r}")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes should be at least 1, got {num_classes}")
        self.include_background = include_background
        self.reduction = _reduction_name(reduction)
        self.num_classes = num_classes
        self.save_details = save_details
        self.ignore_empty = ignore_empty
        self.activation = activation
        self.threshold = threshold
        self.ignore_index = ignore_index
        self._follows_inputs = device is None
        self._keeps_rows = save_details or self.reduction in _PER_SAMPLE
        self._engine: Engine | None = None
        self._name: str | None = None
        super().__init__(
            output_transform=output_transform,
            device="cpu" if device is None else device,
            skip_unrolling=skip_unrolling,
        )

    def _scores(self, counts: ClassCounts) -> torch.Tensor:
        raise NotImplementedError

    @reinit__is_reduced
    def reset(self) -> None:
        # [C'] per class; sized by the first update when num_classes is not given.
        self._class_sum = torch.zeros(0, dtype=torch.float64, device=self._device)
        self._class_count = torch.zeros(0, dtype=torch.float64, device=self._device)
        self._sample_sum = torch.zeros((), dtype=torch.float64, device=self._device)
        self._sample_count = torch.zeros((), dtype=torch.float64, device=self._device)
        self._num_samples = 0
        self._rows: list[torch.Tensor] = []

    @reinit__is_reduced
    def update(self, output: Sequence[torch.Tensor]) -> None:
        """Counts, scores and accumulates one batch, on the device, without reading any value on the host.

        Args:
            output: ``(y_pred, y)``: predictions and labels (see :func:`hotloop.ops.class_counts`).

        Raises:
            ValueError: ``output`` is not a pair, or shapes that do not fit each other.
        """
        if len(output) != 2:
            raise ValueError(f"output should be (y_pred, y), got a sequence of length {len(output)}")
        y_pred, y = output[0].detach(), output[1].detach()
        scores = self._scores(self._counts(y_pred, y))  # [B, C] float32, NaN where undefined
        if not self.include_background and (scores.shape[1] > 1 or not self._keeps_single_channel):
            scores = scores[:, 1:]
        self._accumulate(scores)

    def _counts(self, y_pred: torch.Tensor, y: torch.Tensor) -> ClassCounts:
        return class_counts(
            y_pred,
            y,
            self.num_classes,
            activation=self.activation,
            threshold=self.threshold,
            ignore_index=self.ignore_index,
        )

    def _accumulate(self, scores: torch.Tensor) -> None:
        if self._num_samples == 0:
            self._start(scores.shape[1], scores.device)
        elif scores.shape[1] != self._class_sum.numel():
            raise ValueError(
                f"the number of scored classes changed from {self._class_sum.numel()} to {scores.shape[1]}"
            )
        scores = scores.to(self._device)  # a no-op unless an explicit device differs from the inputs'
        valid = ~torch.isnan(scores)
        values = torch.where(valid, scores, 0.0).double()
        self._class_sum += values.sum(dim=0)
        self._class_count += valid.sum(dim=0)
        per_sample = valid.sum(dim=1)
        self._sample_sum += (values.sum(dim=1) / per_sample.clamp(min=1)).sum()
        self._sample_count += (per_sample > 0).sum()
        self._num_samples += scores.shape[0]
        if self._keeps_rows:
            self._rows.append(scores)

    def _start(self, channels: int, device: torch.device) -> None:
        """Sizes the state at the first update of a run, on the inputs' device unless ``device`` was given."""
        if self._follows_inputs:
            self._device = device
        self._class_sum = torch.zeros(channels, dtype=torch.float64, device=self._device)
        self._class_count = torch.zeros(channels, dtype=torch.float64, device=self._device)
        self._sample_sum = self._sample_sum.to(self._device)
        self._sample_count = self._sample_count.to(self._device)

    @sync_all_reduce("_class_sum", "_class_count", "_sample_sum", "_sample_count", "_num_samples")
    def compute(self) -> Any:
        """The reduced score, as MONAI's handler returns it: a float, or a tensor for per-class/per-sample modes.

        Returns:
            ``float`` for ``"mean"`` / ``"sum"`` (and any result of one element), otherwise a float32 tensor
            (``[C]`` for ``"mean_batch"`` / ``"sum_batch"``, ``[N]`` for ``"*_channel"``, ``[N, C]`` for
            ``"none"``; squeezed). :class:`MeanDice` with ``return_with_label`` returns a dict.

        Raises:
            NotComputableError: Before the first update.
            RuntimeError: ``save_details`` on a metric not attached to an engine.
        """
        if self._num_samples == 0:
            raise NotComputableError(f"{type(self).__name__} must have at least one example before it can be computed.")
        rows = self._gathered_rows() if self._keeps_rows else None
        if self.save_details:
            if self._engine is None or self._name is None:
                raise RuntimeError("please call the attach() function to connect expected engine first.")
            self._engine.state.metric_details[self._name] = rows  # type: ignore[attr-defined]
        if rows is not None and self.reduction in _PER_SAMPLE:
            return self._format(_reduce_rows(rows, self.reduction).float())
        return self._format(self._reduce_totals().float())

    def _reduce_totals(self) -> torch.Tensor:
        if self.reduction == "mean":
            return torch.where(self._sample_count > 0, self._sample_sum / self._sample_count.clamp(min=1), 0.0)
        if self.reduction == "sum":
            return self._class_sum.sum()
        if self.reduction == "sum_batch":
            return self._class_sum
        return torch.where(self._class_count > 0, self._class_sum / self._class_count.clamp(min=1), 0.0)

    def _gathered_rows(self) -> torch.Tensor:
        rows = torch.cat(self._rows) if self._rows else torch.zeros(0, self._class_sum.numel(), device=self._device)
        if idist.get_world_size() > 1:
            rows = _gather_uneven_rows(rows)
        return rows

    def _format(self, result: torch.Tensor) -> Any:
        result = result.squeeze()
        return result.item() if result.ndim == 0 else result

    def attach(self, engine: Engine, name: str, usage: str | MetricUsage | None = None) -> None:
        """Attaches the metric as Ignite's ``Metric.attach`` does, and records the engine for ``save_details``.

        Args:
            engine: The engine whose ``state.metrics[name]`` receives the result.
            name: The metric's name.
            usage: Ignite's usage (epoch-wise by default).
        """
        if usage is None:
            super().attach(engine, name)
        else:
            super().attach(engine, name, usage)
        self._engine = engine
        self._name = name
        if self.save_details and not hasattr(engine.state, "metric_details"):
            engine.state.metric_details = {}  # type: ignore[attr-defined]


class MeanDice(_OverlapMetric):
    """Mean Dice of a segmentation, with MONAI's ``DiceMetric`` numbers, as an Ignite metric (MONAI's handler API).

    ``dice = 2·TP / (2·TP + FP + FN)`` per sample and class, from one pass over ``(y_pred, y)``.

    Args:
        include_background: Score channel 0 too. Without it, channel 0 is dropped (except for one-channel input).
        reduction: One of MONAI's ``MetricReduction`` values (or its string): ``"mean"`` (over classes, then over
            samples, NaN left out), ``"sum"``, ``"mean_batch"``, ``"sum_batch"``, ``"mean_channel"``,
            ``"sum_channel"``, ``"none"``.
        num_classes: Number of classes; needed when ``y_pred`` is a label map ``[B, 1, *spatial]``.
        output_transform: Maps the engine's output to ``(y_pred, y)``.
        save_details: Write the per-sample scores ``[N, C]`` to ``engine.state.metric_details[name]`` at compute
            (MONAI's default; the metric must be attached).
        return_with_label: With ``reduction="mean_batch"``: return ``{"label_0": score, …}`` (rounded to 4 digits),
            or with a list of names, those names as keys.
        ignore_empty: A class absent from the labels scores NaN (left out of the reductions); otherwise 1 if it is
            absent from the prediction too, else 0.
        activation: ``None``: ``y_pred`` is binarized (MONAI's input); ``"softmax"``: ``y_pred`` are logits of
            exclusive classes (prediction = argmax, fused); ``"sigmoid"``: multi-label logits thresholded at
            ``threshold`` after the sigmoid.
        threshold: The probability threshold for ``activation="sigmoid"``.
        ignore_index: A label value (or one-hot channel) whose voxels are left out (MONAI's ``ignore_index``).
        device: Where the state lives; ``None`` (default): on the inputs' device, so that updates never sync.
        skip_unrolling: Ignite's ``skip_unrolling``.

    Examples:
        >>> from hotloop.metrics import MeanDice
        >>> metric = MeanDice(activation="softmax", save_details=False)
        >>> logits = torch.tensor([[[[5.0, 5.0, 0.0, 0.0]], [[0.0, 0.0, 5.0, 5.0]]]])  # [1, 2, 1, 4]
        >>> labels = torch.tensor([[[[0, 0, 0, 1]]]])
        >>> metric.update((logits, labels))
        >>> round(metric.compute(), 4)  # classes 0 and 1: 2·2/(2+3) and 2·1/(1+2)
        0.7333
    """

    def __init__(
        self,
        include_background: bool = True,
        reduction: Any = "mean",
        num_classes: int | None = None,
        output_transform: Callable[..., Any] = _identity,
        save_details: bool = True,
        return_with_label: bool | list[str] = False,
        *,
        ignore_empty: bool = True,
        activation: Activation = None,
        threshold: float = 0.5,
        ignore_index: int | None = None,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        self.return_with_label = return_with_label
        super().__init__(
            include_background,
            reduction,
            num_classes,
            output_transform,
            save_details,
            ignore_empty=ignore_empty,
            activation=activation,
            threshold=threshold,
            ignore_index=ignore_index,
            device=device,
            skip_unrolling=skip_unrolling,
        )

    def _scores(self, counts: ClassCounts) -> torch.Tensor:
        tp, fp, fn = counts
        labelled = tp + fn
        total = labelled + tp + fp
        # Float32 division of exact integer counts: the same rounding as MONAI's float32 sums (exact below 2**24).
        dice = (2 * tp).float() / total.float()
        if self.ignore_empty:
            return torch.where(labelled > 0, dice, float("nan"))
        return torch.where(labelled > 0, dice, (total == 0).float())

    def _format(self, result: torch.Tensor) -> Any:
        if self.reduction == "mean_batch" and self.return_with_label:
            if isinstance(self.return_with_label, bool):
                first = 0 if self.include_background else 1
                keys = [f"label_{i + first}" for i in range(result.numel())]
            else:
                keys = list(self.return_with_label)
            return {key: round(value, 4) for key, value in zip(keys, result.tolist())}
        return super()._format(result)


class MeanIoU(_OverlapMetric):
    """Mean intersection over union, with MONAI's ``MeanIoU`` numbers, as an Ignite metric (``MeanIoUHandler`` API).

    ``iou = TP / (TP + FP + FN)`` per sample and class, from one pass over ``(y_pred, y)``. Arguments as
    :class:`MeanDice` (without ``return_with_label``). As in MONAI's ``MeanIoU``: ``include_background=False`` drops
    channel 0 even of one-channel input, and an ``ignore_index`` that is a class empties that class (no voxel is
    masked; any other value masks unlabelled voxels, as for Dice).

    Examples:
        >>> from hotloop.metrics import MeanIoU
        >>> metric = MeanIoU(activation="softmax", save_details=False)
        >>> logits = torch.tensor([[[[5.0, 5.0, 0.0, 0.0]], [[0.0, 0.0, 5.0, 5.0]]]])
        >>> metric.update((logits, torch.tensor([[[[0, 0, 0, 1]]]])))
        >>> round(metric.compute(), 4)  # 2/3 and 1/2
        0.5833
    """

    _keeps_single_channel = False

    def __init__(
        self,
        include_background: bool = True,
        reduction: Any = "mean",
        output_transform: Callable[..., Any] = _identity,
        save_details: bool = True,
        *,
        num_classes: int | None = None,
        ignore_empty: bool = True,
        activation: Activation = None,
        threshold: float = 0.5,
        ignore_index: int | None = None,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        super().__init__(
            include_background,
            reduction,
            num_classes,
            output_transform,
            save_details,
            ignore_empty=ignore_empty,
            activation=activation,
            threshold=threshold,
            ignore_index=ignore_index,
            device=device,
            skip_unrolling=skip_unrolling,
        )

    def _counts(self, y_pred: torch.Tensor, y: torch.Tensor) -> ClassCounts:
        classes = self.num_classes if self.num_classes is not None else y_pred.shape[1]
        if self.ignore_index is None or not 0 <= self.ignore_index < classes:
            return super()._counts(y_pred, y)
        # MONAI's compute_iou: a class index empties that class's channel; no voxel is masked.
        counts = class_counts(y_pred, y, self.num_classes, activation=self.activation, threshold=self.threshold)
        for count in counts:
            count[:, self.ignore_index] = 0
        return counts

    def _scores(self, counts: ClassCounts) -> torch.Tensor:
        tp, fp, fn = counts
        labelled = tp + fn
        union = labelled + fp
        iou = tp.float() / union.float()
        if self.ignore_empty:
            return torch.where(labelled > 0, iou, float("nan"))
        return torch.where(union > 0, iou, 1.0)


def _gather_uneven_rows(rows: torch.Tensor) -> torch.Tensor:
    """``rows`` ([N_r, C]) of every process concatenated in rank order; N_r may differ between processes.

    Runs at ``compute`` (once per epoch): reading the W row counts to the host is the one sync it needs.
    """
    counts = cast(torch.Tensor, idist.all_gather(torch.tensor([rows.shape[0]], device=rows.device)))
    shapes = [[int(count), *rows.shape[1:]] for count in counts.tolist()]
    return torch.cat(idist.all_gather_tensors_with_shapes(rows, shapes))
