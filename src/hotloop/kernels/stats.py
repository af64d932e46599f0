"""Segmentation statistics in one pass over the data, without one-hot tensors.

Inputs, as contiguous ``[B, K, S]`` blocks (``S`` the flattened volume):

- predictions ``x``: scores ``[B, C, S]`` (the class is their argmax over channels, as ``torch.argmax`` picks it) or
  a label map ``[B, 1, S]``;
- labels ``y``: a label map ``[B, 1, S]`` or a one-hot ``[B, C, S]`` (the class is the first channel that is set;
  none set means "no label").

A label-map value that is not a whole number in ``[0, C)`` means "no class" (for predictions: counted in no class's
predictions; for labels: counted in no class's labels — the voxel can still be a false positive), as in MONAI's
``DiceMetric``, which compares ``y == c`` for each class. With ``ignore_index``, voxels whose label map value equals
it (one-hot labels: whose class is that channel; or, for a value outside ``[0, C)``, that have no class set — MONAI's
``create_ignore_mask``) are left out of every count.

Kernels:

- ``_class_counts_kernel``: per sample and class, ``[B, 3, C]`` int64 counts of true positives, predictions and
  labels — three block histograms of ``next_pow2(C + 1)`` bins, one atomic add per non-zero bin.
- ``_confusion_kernel``: per-sample ``[B, C + 1, C + 1]`` int64 confusion matrices (rows: label, cols: prediction;
  index ``C``: "no class"). Block histograms of ``(C + 1)²`` bins while that is at most ``_MAX_HISTOGRAM_BINS``,
  otherwise one atomic add per voxel (contended on large uniform regions; used for ``C > 30`` only).
- ``_multilabel_counts_kernel``: per-channel binary decisions (``sigmoid(x) >= t`` or ``x != 0``) against multi-hot
  labels or a label map, ``[B, 3, C]`` counts, for multi-label Dice/IoU.

The ``*_reference`` functions say the same in plain torch (with one-hot tensors: they are the oracle, not a path).
"""

import torch

from hotloop._optional import TRITON

try:
    import triton
    import triton.language as tl
except ModuleNotFoundError as error:  # without triton: one error naming the extra, not a bare "No module named"
    if error.name != "triton":
        raise
    raise TRITON.error("hotloop.kernels.stats (Triton kernels)") from error

from hotloop.kernels._common import blocks, channel_argmax, check_scores, round_to

__all__ = [
    "class_counts",
    "class_counts_reference",
    "confusion",
    "confusion_reference",
    "multilabel_counts",
    "multilabel_counts_reference",
]

_BLOCK_S_MULTILABEL = 1024
# Up to 32 × 32 bins a block histogram beats per-voxel atomics on uniform regions; unmeasured (no GPU here).
_MAX_HISTOGRAM_BINS = 1024


# ---------------------------------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------------------------------


@triton.jit
def _as_class(v, C):
    """``v`` as a class index in ``[0, C)``, or ``C`` where it is not one (negative, too large, not whole)."""
    i = v.to(tl.int64)
    whole = i.to(v.dtype) == v
    return tl.where((i >= 0) & (i < C) & whole, i, C)


@triton.jit
def _first_set_channel(y_ptr, base, offs_s, mask_s, C, S, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """The first channel of a one-hot that is not zero, or ``C`` where none is."""
    first = tl.full([BLOCK_S], C, tl.int64)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask = (offs_c[:, None] < C) & mask_s[None, :]
        y = tl.load(y_ptr + base + offs_c[:, None].to(tl.int64) * S + offs_s[None, :], mask=mask, other=0)
        candidate = tl.where((y != 0) & mask, offs_c[:, None].to(tl.int64), C)
        first = tl.minimum(first, tl.min(candidate, axis=0))
    return first


@triton.jit
def _predicted_class(
    x_ptr, b, offs_s, mask_s, C, S, X_INDEX: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr
):
    if X_INDEX:
        v = tl.load(x_ptr + b.to(tl.int64) * S + offs_s, mask=mask_s, other=0)
        return _as_class(v, C)
    else:
        base = b.to(tl.int64) * C * S
        return channel_argmax(x_ptr, base, offs_s, mask_s, C, S, BLOCK_C, BLOCK_S).to(tl.int64)


@triton.jit
def _labelled_class(
    y_ptr,
    b,
    offs_s,
    mask_s,
    C,
    S,
    ignore_index,
    Y_INDEX: tl.constexpr,
    HAS_IGNORE: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    """``(label, keep)``: the class of each voxel (``C``: none) and whether it counts at all."""
    keep = mask_s
    if Y_INDEX:
        v = tl.load(y_ptr + b.to(tl.int64) * S + offs_s, mask=mask_s, other=0)
        label = _as_class(v, C)
        if HAS_IGNORE:
            keep = keep & (v != ignore_index)
    else:
        label = _first_set_channel(y_ptr, b.to(tl.int64) * C * S, offs_s, mask_s, C, S, BLOCK_C, BLOCK_S)
        if HAS_IGNORE:
            # The launcher maps an ignore_index outside [0, C) to C: "no channel set".
            keep = keep & (label != ignore_index)
    return label, keep


@triton.jit
def _class_counts_kernel(
    x_ptr,
    y_ptr,
    out_ptr,
    C,
    S,
    ignore_index,
    X_INDEX: tl.constexpr,
    Y_INDEX: tl.constexpr,
    HAS_IGNORE: tl.constexpr,
    NUM_BINS: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    # x: [B, C or 1, S]; y: [B, 1 or C, S]; out: [B, 3, C] int64 (tp, predicted, labelled), zeroed;
    # grid (cdiv(S, BLOCK_S), B).
    pid_s = tl.program_id(0)
    b = tl.program_id(1)
    offs_s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    mask_s = offs_s < S
    pred = _predicted_class(x_ptr, b, offs_s, mask_s, C, S, X_INDEX, BLOCK_C, BLOCK_S)
    label, keep = _labelled_class(y_ptr, b, offs_s, mask_s, C, S, ignore_index, Y_INDEX, HAS_IGNORE, BLOCK_C, BLOCK_S)
    pred32 = pred.to(tl.int32)
    # Bin C ("no class") collects the voxels without a predicted / labelled class; it is not stored.
    tp = tl.histogram(pred32, NUM_BINS, mask=keep & (pred == label))
    predicted = tl.histogram(pred32, NUM_BINS, mask=keep)
    labelled = tl.histogram(label.to(tl.int32), NUM_BINS, mask=keep)
    bins = tl.arange(0, NUM_BINS)
    in_range = bins < C
    out = out_ptr + b.to(tl.int64) * 3 * C + bins
    tl.atomic_add(out, tp.to(tl.int64), mask=in_range & (tp > 0))
    tl.atomic_add(out + C, predicted.to(tl.int64), mask=in_range & (predicted > 0))
    tl.atomic_add(out + 2 * C, labelled.to(tl.int64), mask=in_range & (labelled > 0))


@triton.jit
def _confusion_kernel(
    x_ptr,
    y_ptr,
    out_ptr,
    C,
    S,
    ignore_index,
    X_INDEX: tl.constexpr,
    Y_INDEX: tl.constexpr,
    HAS_IGNORE: tl.constexpr,
    PER_VOXEL: tl.constexpr,
    NUM_BINS: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    # x: [B, C or 1, S]; y: [B, 1 or C, S]; out: [B, C + 1, C + 1] int64, zeroed; grid (cdiv(S, BLOCK_S), B).
    pid_s = tl.program_id(0)
    b = tl.program_id(1)
    offs_s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    mask_s = offs_s < S
    pred = _predicted_class(x_ptr, b, offs_s, mask_s, C, S, X_INDEX, BLOCK_C, BLOCK_S)
    label, keep = _labelled_class(y_ptr, b, offs_s, mask_s, C, S, ignore_index, Y_INDEX, HAS_IGNORE, BLOCK_C, BLOCK_S)
    cell = (label * (C + 1) + pred).to(tl.int32)
    out = out_ptr + b.to(tl.int64) * (C + 1) * (C + 1)
    if PER_VOXEL:
        tl.atomic_add(out + cell, tl.full([BLOCK_S], 1, tl.int64), mask=keep)
    else:
        counts = tl.histogram(cell, NUM_BINS, mask=keep)
        bins = tl.arange(0, NUM_BINS)
        tl.atomic_add(out + bins, counts.to(tl.int64), mask=(bins < (C + 1) * (C + 1)) & (counts > 0))


@triton.jit
def _multilabel_counts_kernel(
    x_ptr,
    y_ptr,
    out_ptr,
    C,
    S,
    threshold,
    ignore_index,
    SIGMOID: tl.constexpr,
    Y_INDEX: tl.constexpr,
    HAS_IGNORE: tl.constexpr,
    BLOCK_S: tl.constexpr,
):
    # x: [B, C, S]; y: [B, 1 or C, S]; out: [B, 3, C] int64 (tp, predicted, labelled), zeroed;
    # grid (cdiv(S, BLOCK_S), B). A label map is read once for all channels.
    pid_s = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    keep = offs_s < S
    label_map = tl.zeros([BLOCK_S], tl.float32)
    if Y_INDEX:
        label_map = tl.load(y_ptr + b * S + offs_s, mask=keep, other=-1).to(tl.float32)
        if HAS_IGNORE:
            keep = keep & (label_map != ignore_index)
    for c in range(0, C):
        x = tl.load(x_ptr + (b * C + c) * S + offs_s, mask=keep, other=0)
        if SIGMOID:
            # As MONAI's chain: the sigmoid in float32, rounded to x's dtype, then compared (AsDiscrete: >=).
            pred = round_to(tl.sigmoid(x.to(tl.float32)), x_ptr.dtype.element_ty) >= threshold
        else:
            pred = x != 0
        if Y_INDEX:
            label = label_map == c
        else:
            label = tl.load(y_ptr + (b * C + c) * S + offs_s, mask=keep, other=0) != 0
        pred = pred & keep
        label = label & keep
        out = out_ptr + b * 3 * C + c
        tl.atomic_add(out, tl.sum((pred & label).to(tl.int64), axis=0))
        tl.atomic_add(out + C, tl.sum(pred.to(tl.int64), axis=0))
        tl.atomic_add(out + 2 * C, tl.sum(label.to(tl.int64), axis=0))


# ---------------------------------------------------------------------------------------------------------------------
# launchers
# ---------------------------------------------------------------------------------------------------------------------


def _check_block(t: torch.Tensor, name: str, batch: int, channels: tuple[int, ...], volume: int) -> None:
    if t.dim() != 3 or t.shape[0] != batch or t.shape[1] not in channels or t.shape[2] != volume:
        raise ValueError(
            f"{name} should be [{batch}, {' or '.join(map(str, channels))}, {volume}], got {tuple(t.shape)}"
        )


def _prepare(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, x_index: bool, y_index: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Checks the ``[B, K, S]`` blocks, returns them contiguous, booleans viewed as bytes."""
    if num_classes < 1:
        raise ValueError(f"num_classes should be at least 1, got {num_classes}")
    if x.dim() != 3:
        raise ValueError(f"x should be [B, C or 1, S], got {tuple(x.shape)}")
    batch, volume = x.shape[0], x.shape[2]
    _check_block(x, "x", batch, (1,) if x_index else (num_classes,), volume)
    _check_block(y, "y", batch, (1,) if y_index else (num_classes,), volume)
    if not x_index:
        check_scores(x, "scores")
    if x.device != y.device:
        raise ValueError(f"x and y should be on one device, got {x.device} and {y.device}")
    x, y = (t.view(torch.uint8) if t.dtype == torch.bool else t for t in (x, y))
    return x.contiguous(), y.contiguous()


def _ignore_arg(ignore_index: int | None, num_classes: int, y_index: bool) -> int:
    if ignore_index is None or y_index:
        return 0 if ignore_index is None else ignore_index
    return ignore_index if 0 <= ignore_index < num_classes else num_classes


def class_counts(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    x_index: bool,
    y_index: bool,
    ignore_index: int | None = None,
) -> torch.Tensor:
    """Per sample and class: true positives, predictions and labels, one pass, exclusive classes.

    Args:
        x: Scores ``[B, C, S]`` (float16/bfloat16/float32) or, with ``x_index``, a label map ``[B, 1, S]``.
        y: A label map ``[B, 1, S]`` (with ``y_index``) or a one-hot ``[B, C, S]``; any dtype.
        num_classes: ``C``.
        x_index: ``x`` is a label map.
        y_index: ``y`` is a label map.
        ignore_index: Voxels to leave out (see the module docstring).

    Returns:
        ``[B, 3, C]`` int64: true positives, predicted, labelled.
    """
    x, y = _prepare(x, y, num_classes, x_index, y_index)
    batch, volume = x.shape[0], x.shape[2]
    out = torch.zeros(batch, 3, num_classes, dtype=torch.int64, device=x.device)
    if batch * volume == 0:
        return out
    block_c, block_s = blocks(num_classes)
    _class_counts_kernel[(triton.cdiv(volume, block_s), batch)](
        x,
        y,
        out,
        num_classes,
        volume,
        _ignore_arg(ignore_index, num_classes, y_index),
        X_INDEX=x_index,
        Y_INDEX=y_index,
        HAS_IGNORE=ignore_index is not None,
        NUM_BINS=triton.next_power_of_2(num_classes + 1),
        BLOCK_C=block_c,
        BLOCK_S=block_s,
    )
    return out


def confusion(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    x_index: bool,
    y_index: bool,
    ignore_index: int | None = None,
) -> torch.Tensor:
    """Per-sample confusion matrices, one pass, with a "no class" row and column.

    Args:
        x: Scores ``[B, C, S]`` (float16/bfloat16/float32) or, with ``x_index``, a label map ``[B, 1, S]``.
        y: A label map ``[B, 1, S]`` (with ``y_index``) or a one-hot ``[B, C, S]``; any dtype.
        num_classes: ``C``.
        x_index: ``x`` is a label map.
        y_index: ``y`` is a label map.
        ignore_index: Voxels to leave out (see the module docstring).

    Returns:
        ``[B, C + 1, C + 1]`` int64; ``[b, i, j]`` counts voxels of sample ``b`` labelled ``i`` and predicted ``j``;
        index ``C`` is "no class".
    """
    x, y = _prepare(x, y, num_classes, x_index, y_index)
    batch, volume = x.shape[0], x.shape[2]
    side = num_classes + 1
    out = torch.zeros(batch, side, side, dtype=torch.int64, device=x.device)
    if batch * volume == 0:
        return out
    num_bins = triton.next_power_of_2(side * side)
    block_c, block_s = blocks(num_classes)
    _confusion_kernel[(triton.cdiv(volume, block_s), batch)](
        x,
        y,
        out,
        num_classes,
        volume,
        _ignore_arg(ignore_index, num_classes, y_index),
        X_INDEX=x_index,
        Y_INDEX=y_index,
        HAS_IGNORE=ignore_index is not None,
        PER_VOXEL=num_bins > _MAX_HISTOGRAM_BINS,
        NUM_BINS=min(num_bins, _MAX_HISTOGRAM_BINS),
        BLOCK_C=block_c,
        BLOCK_S=block_s,
    )
    return out


def multilabel_counts(
    x: torch.Tensor,
    y: torch.Tensor,
    y_index: bool,
    sigmoid: bool,
    threshold: float = 0.5,
    ignore_index: int | None = None,
) -> torch.Tensor:
    """Per sample and channel: true positives, predictions and labels of independent binary decisions.

    Args:
        x: ``[B, C, S]``: logits (with ``sigmoid``; float16/bfloat16/float32) or binarized predictions (any dtype;
            non-zero is positive).
        y: Multi-hot labels ``[B, C, S]`` (non-zero is positive) or, with ``y_index``, a label map ``[B, 1, S]``
            (channel ``c`` is positive where the value equals ``c``).
        y_index: ``y`` is a label map.
        sigmoid: Predictions are ``sigmoid(x) >= threshold`` (the sigmoid rounded to ``x``'s dtype), else ``x != 0``.
        threshold: The threshold, with ``sigmoid``.
        ignore_index: With a label map only: voxels whose label equals it are left out.

    Returns:
        ``[B, 3, C]`` int64: true positives, predicted, labelled.

    Raises:
        ValueError: ``ignore_index`` with multi-hot labels (the torch path handles that case).
    """
    if x.dim() != 3:
        raise ValueError(f"x should be [B, C, S], got {tuple(x.shape)}")
    batch, channels, volume = x.shape
    _check_block(y, "y", batch, (1,) if y_index else (channels,), volume)
    if sigmoid:
        check_scores(x, "logits")
    if ignore_index is not None and not y_index:
        raise ValueError("ignore_index with multi-hot labels is not handled by the kernel")
    x, y = (t.view(torch.uint8) if t.dtype == torch.bool else t for t in (x, y))
    x, y = x.contiguous(), y.contiguous()
    out = torch.zeros(batch, 3, channels, dtype=torch.int64, device=x.device)
    if batch * volume * channels == 0:
        return out
    rounded = float(torch.tensor(threshold, dtype=x.dtype)) if sigmoid else threshold  # host scalar
    _multilabel_counts_kernel[(triton.cdiv(volume, _BLOCK_S_MULTILABEL), batch)](
        x,
        y,
        out,
        channels,
        volume,
        rounded,
        0 if ignore_index is None else ignore_index,
        SIGMOID=sigmoid,
        Y_INDEX=y_index,
        HAS_IGNORE=ignore_index is not None,
        BLOCK_S=_BLOCK_S_MULTILABEL,
    )
    return out


# ---------------------------------------------------------------------------------------------------------------------
# references
# ---------------------------------------------------------------------------------------------------------------------


def _class_reference(v: torch.Tensor, num_classes: int) -> torch.Tensor:
    i = v.long()
    whole = i.to(v.dtype) == v
    return torch.where((i >= 0) & (i < num_classes) & whole, i, num_classes)


def _reference_classes(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, x_index: bool, y_index: bool, ignore_index: int | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(pred, label, keep)``, each ``[B, S]``."""
    pred = _class_reference(x[:, 0], num_classes) if x_index else torch.argmax(x, dim=1)
    keep = torch.ones_like(pred, dtype=torch.bool)
    if y_index:
        label = _class_reference(y[:, 0], num_classes)
        if ignore_index is not None:
            keep = y[:, 0] != ignore_index
    else:
        channels = torch.arange(num_classes, device=y.device).view(1, -1, 1)
        label = torch.where(y != 0, channels, num_classes).amin(dim=1)
        if ignore_index is not None:
            keep = label != (ignore_index if 0 <= ignore_index < num_classes else num_classes)
    return pred, label, keep


def confusion_reference(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    x_index: bool,
    y_index: bool,
    ignore_index: int | None = None,
) -> torch.Tensor:
    """What :func:`confusion` computes, as a product of one-hot tensors."""
    pred, label, keep = _reference_classes(x, y, num_classes, x_index, y_index, ignore_index)
    side = num_classes + 1
    pred_hot = torch.nn.functional.one_hot(pred, side) * keep[..., None]
    label_hot = torch.nn.functional.one_hot(label, side)
    return torch.einsum("bsl,bsp->blp", label_hot.double(), pred_hot.double()).long()


def class_counts_reference(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    x_index: bool,
    y_index: bool,
    ignore_index: int | None = None,
) -> torch.Tensor:
    """What :func:`class_counts` computes, from :func:`confusion_reference`."""
    matrix = confusion_reference(x, y, num_classes, x_index, y_index, ignore_index)
    tp = torch.diagonal(matrix, dim1=1, dim2=2)[:, :num_classes]
    predicted = matrix.sum(dim=1)[:, :num_classes]
    labelled = matrix.sum(dim=2)[:, :num_classes]
    return torch.stack([tp, predicted, labelled], dim=1)


def multilabel_counts_reference(
    x: torch.Tensor,
    y: torch.Tensor,
    y_index: bool,
    sigmoid: bool,
    threshold: float = 0.5,
    ignore_index: int | None = None,
) -> torch.Tensor:
    """What :func:`multilabel_counts` computes, with boolean ``[B, C, S]`` tensors."""
    pred = torch.sigmoid(x.float()).to(x.dtype) >= threshold if sigmoid else x != 0
    if y_index:
        label = y == torch.arange(x.shape[1], device=y.device).view(1, -1, 1)
        keep = torch.ones_like(y, dtype=torch.bool) if ignore_index is None else y != ignore_index
    else:
        label = y != 0
        keep = torch.ones_like(pred)
    pred, label = pred & keep, label & keep
    return torch.stack([(pred & label).sum(-1), pred.sum(-1), label.sum(-1)], dim=1)
