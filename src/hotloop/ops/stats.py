"""Segmentation statistics in one pass: per-sample per-class TP / FP / FN counts and confusion matrices.

The inputs are what a segmentation network and a data loader give, not their one-hot expansions:

- ``y_pred``: logits or probabilities ``[B, C, *spatial]``; a label map ``[B, 1, *spatial]`` (with ``num_classes``
  above 1, as in MONAI's ``DiceMetric``; whatever ``activation``); or, for ``activation=None``, binarized
  predictions ``[B, C, *spatial]``.
- ``y``: a label map ``[B, 1, *spatial]`` or ``[B, *spatial]`` (any integer or float dtype), or a one-hot /
  multi-hot ``[B, C, *spatial]``.

``activation`` says how predictions become classes, in MONAI's terms:

- ``"softmax"``: the classes are exclusive, the prediction is the argmax over channels (``Activations(softmax=True)``
  then ``AsDiscrete(argmax=True)``; the softmax itself is never computed). One-hot labels must be one-hot (the class
  of a voxel is its first set channel; none set: no label).
- ``"sigmoid"``: each channel is a binary decision ``sigmoid(x) >= threshold`` (``Activations(sigmoid=True)`` then
  ``AsDiscrete(threshold=t)``); labels may overlap (multi-hot).
- ``None``: ``y_pred`` is already binarized, non-zero is positive (MONAI's ``DiceMetric`` input).

Counting follows MONAI's ``DiceMetric``: a label-map value that is not a whole number in ``[0, C)`` labels no class
(the voxel still counts as a false positive of its predicted class); ``ignore_index`` removes voxels from every count
(``create_ignore_mask``: label-map voxels equal to it; for one-hot labels, voxels of that channel, or for a value
outside ``[0, C)`` voxels with no channel set).

Dispatch: CUDA tensors with triton → :mod:`hotloop.kernels.stats` (one kernel; ``[B, 3, C]`` or ``[B, C+1, C+1]``
written, nothing else allocated). Elsewhere → the torch path below: ``argmax`` + ``bincount`` over
``(label · (C + 1) + pred)`` per chunk of voxels, so the temporaries stay a few MiB whatever the volume and ``C``
(on CUDA without triton, ``index_add_`` replaces ``bincount``, which syncs to size its output).
"""

from __future__ import annotations

from types import ModuleType
from typing import Literal, NamedTuple

import torch

from hotloop.ops._dispatch import Backend, use_triton

__all__ = ["Activation", "ClassCounts", "class_counts", "confusion_matrix"]

#: How predictions become classes: see the module docstring.
Activation = Literal["softmax", "sigmoid"] | None

_ACTIVATIONS = ("softmax", "sigmoid", None)
_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)

# Chunks of the torch path: at most 2**21 channel × voxel elements (a byte temporary of 2 MiB) and 2**17 voxels (an
# int64 temporary of 1 MiB), whatever the volume and C. B=2, 96³, one thread, the 2-core dev machine: peak extra
# memory 2.9 MiB (C=3) and 3.4 MiB (C=14) chunked, 28.5 and 31.8 MiB unchunked, in the same time (64 against 61 ms,
# 85 against 81 ms). torch.compile of the chunk body measured 73 ms for C=14 after a 16 s compile: not used.
_CHUNK_ELEMENTS = 1 << 21
_CHUNK_VOXELS = 1 << 17


class ClassCounts(NamedTuple):
    """Per-sample per-class counts, each ``[B, C]`` int64 on the inputs' device."""

    tp: torch.Tensor
    fp: torch.Tensor
    fn: torch.Tensor


class _Layout(NamedTuple):
    x: torch.Tensor  # [B, C or 1, S]
    y: torch.Tensor  # [B, 1 or C, S]
    num_classes: int
    x_index: bool
    y_index: bool


def _kernels() -> ModuleType:
    from hotloop.kernels import stats  # imports triton: only on the kernel path

    return stats


def _is_label_map(y_pred: torch.Tensor, num_classes: int | None) -> bool:
    return y_pred.dim() > 1 and y_pred.shape[1] == 1 and num_classes is not None and num_classes > 1


def _layout(y_pred: torch.Tensor, y: torch.Tensor, num_classes: int | None, exclusive: bool) -> _Layout:
    """Checks shapes (host metadata only) and views both inputs as ``[B, K, S]``."""
    for name, t in (("y_pred", y_pred), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} should be a torch.Tensor, got {type(t).__name__}")
    if y_pred.dim() < 2:
        raise ValueError(f"y_pred should be [B, C, *spatial], got shape {tuple(y_pred.shape)}")
    channels = y_pred.shape[1]
    classes = channels if num_classes is None else num_classes
    if classes < 1:
        raise ValueError(f"num_classes should be at least 1, got {classes}")
    if exclusive and classes < 2:
        raise ValueError("activation='softmax' needs at least 2 classes; use 'sigmoid' or None for one channel")
    x_index = exclusive and channels == 1 and classes > 1
    if not x_index and channels != classes:
        raise ValueError(f"y_pred should have num_classes={classes} channels (or 1: a label map), got {channels}")
    if y.dim() == y_pred.dim() - 1:
        y = y.unsqueeze(1)
    if y.dim() != y_pred.dim() or y.shape[0] != y_pred.shape[0] or y.shape[2:] != y_pred.shape[2:]:
        raise ValueError(
            f"y should be [B, *spatial], [B, 1, *spatial] or [B, {classes}, *spatial] for y_pred of shape "
            f"{tuple(y_pred.shape)}, got {tuple(y.shape)}"
        )
    y_index = y.shape[1] == 1 and classes > 1
    if not y_index and y.shape[1] != classes:
        raise ValueError(f"y should have 1 or num_classes={classes} channels, got {y.shape[1]}")
    batch = y_pred.shape[0]
    return _Layout(y_pred.reshape(batch, channels, -1), y.reshape(batch, y.shape[1], -1), classes, x_index, y_index)


def class_counts(
    y_pred: torch.Tensor,
    y: torch.Tensor,
    num_classes: int | None = None,
    *,
    activation: Activation = "softmax",
    threshold: float = 0.5,
    ignore_index: int | None = None,
    backend: Backend = "auto",
) -> ClassCounts:
    """Per-sample per-class true positives, false positives and false negatives, in one pass, no one-hot built.

    Args:
        y_pred: Predictions (see the module docstring).
        y: Labels (see the module docstring).
        num_classes: ``C``; ``None`` for ``y_pred.shape[1]``. Needed when ``y_pred`` is a label map.
        activation: ``"softmax"`` (exclusive classes, argmax), ``"sigmoid"`` (per-channel threshold of the
            sigmoid) or ``None`` (``y_pred`` is binarized).
        threshold: The probability threshold for ``"sigmoid"``.
        ignore_index: Label value (or one-hot channel) whose voxels are left out of every count.
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.

    Returns:
        :class:`ClassCounts` of ``[B, C]`` int64 tensors.

    Raises:
        TypeError: An input is not a tensor.
        ValueError: Shapes that do not fit each other, an unknown ``activation``, or ``"softmax"`` with one class.

    Examples:
        >>> logits = torch.tensor([[[[2.0, 0.0]], [[1.0, 3.0]]]])  # [1, 2, 1, 2]
        >>> labels = torch.tensor([[[[0, 0]]]])
        >>> class_counts(logits, labels)
        ClassCounts(tp=tensor([[1, 0]]), fp=tensor([[0, 1]]), fn=tensor([[1, 0]]))
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation should be one of {_ACTIVATIONS}, got {activation!r}")
    if activation is None and _is_label_map(y_pred, num_classes):
        activation = "softmax"  # a label map of predictions: exclusive classes, as MONAI's DiceMetric reads it
    layout = _layout(y_pred, y, num_classes, activation == "softmax")
    counts = _counts(layout, activation, threshold, ignore_index, backend)  # [B, 3, C]: tp, predicted, labelled
    tp = counts[:, 0]
    return ClassCounts(tp, counts[:, 1] - tp, counts[:, 2] - tp)


def confusion_matrix(
    y_pred: torch.Tensor,
    y: torch.Tensor,
    num_classes: int | None = None,
    *,
    per_sample: bool = False,
    ignore_index: int | None = None,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Confusion matrix of exclusive classes (argmax of ``y_pred``), in one pass, as Ignite's ``ConfusionMatrix``.

    Rows are labels, columns predictions. Voxels whose label is not a class in ``[0, C)`` are left out, as Ignite
    leaves them out.

    Args:
        y_pred: Scores ``[B, C, *spatial]``, or a label map ``[B, 1, *spatial]`` with ``num_classes``.
        y: A label map ``[B, *spatial]`` / ``[B, 1, *spatial]``, or a one-hot ``[B, C, *spatial]``.
        num_classes: ``C``; ``None`` for ``y_pred.shape[1]``.
        per_sample: Return ``[B, C, C]`` instead of the sum over the batch.
        ignore_index: Label value (or one-hot channel) whose voxels are left out.
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.

    Returns:
        ``[C, C]`` (or ``[B, C, C]``) int64 counts.
    """
    layout = _layout(y_pred, y, num_classes, exclusive=True)
    c = layout.num_classes
    if use_triton(backend, layout.x, layout.x_index or layout.x.dtype in _KERNEL_DTYPES):
        matrix = _kernels().confusion(layout.x, layout.y, c, layout.x_index, layout.y_index, ignore_index)
    else:
        matrix = _confusion_torch(layout, ignore_index)
    matrix = matrix[:, :c, :c]
    return matrix if per_sample else matrix.sum(dim=0)


def _counts(
    layout: _Layout, activation: Activation, threshold: float, ignore_index: int | None, backend: Backend
) -> torch.Tensor:
    x, y, c = layout.x, layout.y, layout.num_classes
    if activation == "softmax":
        supported = layout.x_index or x.dtype in _KERNEL_DTYPES
        if use_triton(backend, x, supported):
            return _kernels().class_counts(x, y, c, layout.x_index, layout.y_index, ignore_index)
        matrix = _confusion_torch(layout, ignore_index)  # [B, C+1, C+1]
        tp = torch.diagonal(matrix, dim1=1, dim2=2)[:, :c]
        return torch.stack([tp, matrix.sum(dim=1)[:, :c], matrix.sum(dim=2)[:, :c]], dim=1)
    sigmoid = activation == "sigmoid"
    supported = (not sigmoid or x.dtype in _KERNEL_DTYPES) and (ignore_index is None or layout.y_index)
    if use_triton(backend, x, supported):
        return _kernels().multilabel_counts(x, y, layout.y_index, sigmoid, threshold, ignore_index)
    return _multilabel_torch(layout, sigmoid, threshold, ignore_index)


# ---------------------------------------------------------------------------------------------------------------------
# torch path
# ---------------------------------------------------------------------------------------------------------------------


def _chunk(batch: int, channels: int) -> int:
    """Voxels per sample in one chunk of the torch path."""
    return max(1, min(_CHUNK_VOXELS, _CHUNK_ELEMENTS // max(channels, 1)) // max(batch, 1))


def _label_classes(v: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Label-map values as int64 classes; -1 or ``C`` where a value is not a class (negative, too large, not whole).

    Two "no class" values, below and above, let one ``clamp`` do the range check.
    """
    if v.dtype == torch.int64:
        return v.clamp(-1, num_classes)  # not in place: v is the caller's tensor
    if not v.is_floating_point():
        return v.long().clamp_(-1, num_classes)  # long() copies (bool, uint8, int8-32)
    clamped = v.clamp(-1, num_classes)  # before the cast, so that no value wraps into range
    classes = clamped.long()
    return classes.masked_fill_(classes != clamped, -1)  # 1.5, -0.5 and NaN are not classes


def _reversed_first_true(hit: torch.Tensor) -> torch.Tensor:
    """For ``[B, C, n]`` booleans (overwritten), ``C - first`` for the first True channel, 0 where none is: ``[B, n]``.

    The largest of ``hit * (C, C-1, …, 1)`` over channels: an ``amax``, which torch vectorizes over a strided dim,
    where ``argmax`` / ``max(dim)`` do not. B=2, C=14, 2**16 voxels, float32, one thread, the 2-core dev machine:
    :func:`_reversed_argmax` takes 2.7 ms, ``torch.max(x, 1).indices`` 7.5 ms, ``torch.argmax(x, 1)`` 25.4 ms.
    Callers keep the reversed index (``C - first``): turning it back would be one more pass.
    """
    channels = hit.shape[1]
    if channels < 256:
        weights = torch.arange(channels, 0, -1, dtype=torch.uint8, device=hit.device).view(1, -1, 1)
        return hit.view(torch.uint8).mul_(weights).amax(dim=1)
    weights = torch.arange(channels, 0, -1, dtype=torch.int32, device=hit.device).view(1, -1, 1)
    return (hit.view(torch.uint8) * weights).amax(dim=1)


def _reversed_argmax(x: torch.Tensor) -> torch.Tensor:
    """``C - torch.argmax(x, dim=1)`` for ``[B, C, n]``: the first maximum, or the first NaN where there is one."""
    if x.dtype == torch.bool:
        x = x.view(torch.uint8)
    peak = torch.amax(x, dim=1, keepdim=True)  # NaN where a column holds a NaN
    reversed_index = _reversed_first_true(torch.eq(x, peak))  # 0 where a column holds a NaN: nothing equals NaN
    if x.is_floating_point():
        _place_nans(x, peak, reversed_index)
    return reversed_index


def _place_nans(x: torch.Tensor, peak: torch.Tensor, reversed_index: torch.Tensor) -> None:
    """Sets ``reversed_index`` to ``C -`` the first NaN channel in the columns that hold a NaN."""
    if x.device.type == "cpu":
        # Only the NaN columns (usually none): finding them reads a count, free on the host, a sync on a GPU.
        # A full isnan pass would cost ~30% of the whole count (C=14: 168 ms against 116 ms a batch, one thread).
        batch, column = torch.isnan(peak[:, 0]).nonzero(as_tuple=True)
        if batch.numel():
            nans = torch.isnan(x[batch, :, column]).unsqueeze(-1)  # [k, C, 1]
            reversed_index[batch, column] = _reversed_first_true(nans)[:, 0].to(reversed_index.dtype)
    else:
        reversed_index.copy_(_reversed_first_true(torch.eq(x, peak).logical_or_(torch.isnan(x))))


def _labels(y: torch.Tensor, num_classes: int, y_index: bool) -> torch.Tensor:
    """``[B, n]`` int64 classes of a chunk ``y`` of ``[B, 1 or C, n]``; -1 or ``C``: no class."""
    if y_index:
        return _label_classes(y[:, 0], num_classes)
    return _reversed_first_true(y != 0).long().neg_().add_(num_classes)  # first set channel; C where none is


def _ignored(y: torch.Tensor, label: torch.Tensor, num_classes: int, y_index: bool, ignore_index: int) -> torch.Tensor:
    if y_index:
        return y[:, 0] == ignore_index
    # One-hot: a class index drops that class's voxels; any other value drops the voxels with no class set.
    return label == (ignore_index if 0 <= ignore_index < num_classes else num_classes)


def _bincount_syncs(device: torch.device) -> bool:
    # torch.bincount on CUDA reads index.max() on the host to size its output: a sync per call.
    return device.type != "cpu"


def _histogram_add(counts: torch.Tensor, index: torch.Tensor) -> None:
    """``counts[i] += (index == i).sum()`` for every ``i``, without a host sync."""
    if _bincount_syncs(counts.device):
        counts.index_add_(0, index, torch.ones(1, dtype=counts.dtype, device=counts.device).expand(index.numel()))
    else:
        counts += torch.bincount(index, minlength=counts.numel())


def _confusion_torch(layout: _Layout, ignore_index: int | None) -> torch.Tensor:
    """``[B, C+1, C+1]`` int64 per-sample confusion with a "no class" row and column, by chunks of voxels.

    One histogram of ``(label + 1) · (C + 1) + (C - pred)`` per sample: rows ``label + 1`` (0 and ``C + 1``: no
    class), reversed prediction columns (``C``: no class, for label-map predictions). About a dozen torch ops a chunk:
    on the 2-core dev machine under load (load average 3.3), profiled, every parallel op took 1-2 ms whatever its
    size (waiting for its second thread), so fewer ops matter as much as fewer bytes.
    """
    x, y, c = layout.x, layout.y, layout.num_classes
    batch, volume = x.shape[0], x.shape[2]
    cols = c + 1
    cells = (c + 2) * cols
    counts = torch.zeros(batch * cells + 1, dtype=torch.int64, device=x.device)  # last bin: ignored voxels
    base = torch.arange(batch, device=x.device).mul_(cells).add_(cols).unsqueeze(1)  # sample offset, row + 1
    step = _chunk(batch, c)
    for start in range(0, volume, step):
        xs, ys = x[:, :, start : start + step], y[:, :, start : start + step]
        if layout.x_index:
            reversed_pred = _label_classes(xs[:, 0], c).remainder_(cols).neg_().add_(c)  # -1 → C: no class
        else:
            reversed_pred = _reversed_argmax(xs)
        label = _labels(ys, c, layout.y_index)
        ignored = None if ignore_index is None else _ignored(ys, label, c, layout.y_index, ignore_index)
        cell = label.mul_(cols).add_(reversed_pred).add_(base)
        if ignored is not None:
            cell.masked_fill_(ignored, batch * cells)
        _histogram_add(counts, cell.view(-1))
    matrix = counts[:-1].view(batch, c + 2, cols).flip(-1)  # columns back in prediction order
    return torch.cat([matrix[:, 1:-1], matrix[:, :1] + matrix[:, -1:]], dim=1)


def _keep_multihot(y: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """MONAI's ``create_ignore_mask`` for one-hot labels ``[B, C, n]``: ``[B, 1, n]``, False where ignored."""
    if 0 <= ignore_index < y.shape[1]:
        return y[:, ignore_index : ignore_index + 1] == 0
    return (y != 0).any(dim=1, keepdim=True)


def _multilabel_torch(layout: _Layout, sigmoid: bool, threshold: float, ignore_index: int | None) -> torch.Tensor:
    """``[B, 3, C]`` int64 (tp, predicted, labelled) of per-channel binary decisions, by chunks of voxels."""
    x, y = layout.x, layout.y
    batch, channels, volume = x.shape
    out = torch.zeros(batch, 3, channels, dtype=torch.int64, device=x.device)
    classes = torch.arange(channels, device=x.device).view(1, -1, 1)
    step = _chunk(batch, channels)
    for start in range(0, volume, step):
        xs, ys = x[:, :, start : start + step], y[:, :, start : start + step]
        pred = torch.sigmoid(xs.float()).to(xs.dtype) >= threshold if sigmoid else xs != 0
        label = ys == classes if layout.y_index else ys != 0
        if ignore_index is not None:
            keep = ys != ignore_index if layout.y_index else _keep_multihot(ys, ignore_index)
            pred &= keep
            label &= keep
        out[:, 0] += (pred & label).sum(dim=-1)
        out[:, 1] += pred.sum(dim=-1)
        out[:, 2] += label.sum(dim=-1)
    return out
