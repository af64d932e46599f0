"""Postprocessing kernels over a channel dimension: softmax, argmax (→ one-hot), one-hot, (sigmoid →) threshold.

Every launcher sees its input as a contiguous ``[P, C, S]`` block — ``P`` the product of the dims before the channel
dim (the batch), ``C`` the channels, ``S`` the product of the dims after it (the volume) — and each program handles
``BLOCK_S`` voxels of one ``p``, looping over the channels in tiles of ``BLOCK_C``, so that any ``C`` fits a fixed
register budget and every voxel's channels are read by one program (no cross-program reduction). Arithmetic is
float32 whatever the storage dtype, as in MONAI's ``Activations`` (which converts to float32 and back).

The ``*_reference`` functions are the semantics, in plain torch.
"""

import torch

from hotloop._optional import TRITON

try:
    import triton
    import triton.language as tl
except ModuleNotFoundError as error:  # without triton: one error naming the extra, not a bare "No module named"
    if error.name != "triton":
        raise
    raise TRITON.error("hotloop.kernels.postprocess (Triton kernels)") from error

from hotloop.kernels._common import blocks, channel_argmax, check_scores, round_to

__all__ = [
    "argmax",
    "argmax_reference",
    "one_hot",
    "one_hot_reference",
    "softmax",
    "softmax_reference",
    "threshold",
    "threshold_reference",
]

_BLOCK_FLAT = 1024


# ---------------------------------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------------------------------


@triton.jit
def _store_one_hot(out_ptr, base, idx, offs_s, mask_s, C, S, BLOCK_C: tl.constexpr):
    """Writes ``out[c, s] = (idx[s] == c)`` for all C channels of BLOCK_S voxels."""
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask = (offs_c[:, None] < C) & mask_s[None, :]
        hot = offs_c[:, None].to(tl.int64) == idx[None, :]
        ptrs = out_ptr + base + offs_c[:, None].to(tl.int64) * S + offs_s[None, :]
        tl.store(ptrs, hot.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _softmax_kernel(x_ptr, out_ptr, C, S, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    # x, out: [P, C, S]; grid (cdiv(S, BLOCK_S), P).
    pid_s = tl.program_id(0)
    pid_p = tl.program_id(1)
    offs_s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    mask_s = offs_s < S
    base = pid_p.to(tl.int64) * C * S
    # Pass 1: running maximum and rescaled sum of exponentials (online softmax), so any C fits the tile.
    run_max = tl.full([BLOCK_S], float("-inf"), tl.float32)
    run_sum = tl.zeros([BLOCK_S], tl.float32)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask = (offs_c[:, None] < C) & mask_s[None, :]
        ptrs = x_ptr + base + offs_c[:, None].to(tl.int64) * S + offs_s[None, :]
        x = tl.load(ptrs, mask=mask, other=float("-inf")).to(tl.float32)
        new_max = tl.maximum(run_max, tl.max(x, axis=0))
        run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(tl.exp(x - new_max[None, :]), axis=0)
        run_max = new_max
    # Pass 2: normalise and store. For C <= BLOCK_C this reads the tile a second time (from cache).
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask = (offs_c[:, None] < C) & mask_s[None, :]
        offsets = base + offs_c[:, None].to(tl.int64) * S + offs_s[None, :]
        x = tl.load(x_ptr + offsets, mask=mask, other=float("-inf")).to(tl.float32)
        y = tl.exp(x - run_max[None, :]) / run_sum[None, :]
        tl.store(out_ptr + offsets, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _argmax_kernel(x_ptr, out_ptr, C, S, ONE_HOT: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    # x: [P, C, S]; out: [P, C, S] (one-hot) or [P, 1, S] (index); grid (cdiv(S, BLOCK_S), P).
    pid_s = tl.program_id(0)
    pid_p = tl.program_id(1)
    offs_s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    mask_s = offs_s < S
    base = pid_p.to(tl.int64) * C * S
    idx = channel_argmax(x_ptr, base, offs_s, mask_s, C, S, BLOCK_C, BLOCK_S)
    if ONE_HOT:
        _store_one_hot(out_ptr, base, idx.to(tl.int64), offs_s, mask_s, C, S, BLOCK_C)
    else:
        tl.store(out_ptr + pid_p.to(tl.int64) * S + offs_s, idx.to(out_ptr.dtype.element_ty), mask=mask_s)


@triton.jit
def _one_hot_kernel(labels_ptr, out_ptr, C, S, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    # labels: [P, 1, S] (any integer or float dtype); out: [P, C, S]; grid (cdiv(S, BLOCK_S), P).
    pid_s = tl.program_id(0)
    pid_p = tl.program_id(1)
    offs_s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
    mask_s = offs_s < S
    # Truncation toward zero, as ``labels.long()`` in MONAI's one_hot; out-of-range labels match no channel.
    labels = tl.load(labels_ptr + pid_p.to(tl.int64) * S + offs_s, mask=mask_s, other=-1).to(tl.int64)
    _store_one_hot(out_ptr, pid_p.to(tl.int64) * C * S, labels, offs_s, mask_s, C, S, BLOCK_C)


@triton.jit
def _threshold_kernel(x_ptr, out_ptr, N, threshold, SIGMOID: tl.constexpr, BLOCK: tl.constexpr):
    # x, out: [N] flat; grid (cdiv(N, BLOCK),).
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    x = tl.load(x_ptr + offs, mask=mask, other=0)
    v = x.to(tl.float32)
    if SIGMOID:
        # MONAI's Activations hands the sigmoid back in the input's dtype and AsDiscrete compares that rounded value.
        v = round_to(tl.sigmoid(v), x_ptr.dtype.element_ty)
    tl.store(out_ptr + offs, (v >= threshold).to(out_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------------------------------
# launchers
# ---------------------------------------------------------------------------------------------------------------------


def _pcs(x: torch.Tensor, dim: int) -> tuple[int, int, int]:
    """``(P, C, S)`` of ``x`` around channel dim ``dim`` (already normalised to be non-negative)."""
    shape = x.shape
    return shape[:dim].numel(), shape[dim], shape[dim + 1 :].numel()


def _channel_dim(x: torch.Tensor, dim: int) -> int:
    if x.dim() == 0:
        raise ValueError("expected a tensor with a channel dimension, got a 0-d tensor")
    if not -x.dim() <= dim < x.dim():
        raise ValueError(f"dim should be in [{-x.dim()}, {x.dim() - 1}] for a {x.dim()}-d tensor, got {dim}")
    return dim % x.dim()


def softmax(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Softmax over channel dim ``dim``, computed in float32, returned in ``x``'s dtype.

    Args:
        x: Scores, ``[B, C, *spatial]`` for ``dim=1``; float16, bfloat16 or float32.
        dim: The channel dimension.

    Returns:
        A new tensor shaped like ``x``.
    """
    dim = _channel_dim(x, dim)
    check_scores(x)
    x = x.contiguous()
    out = torch.empty_like(x)
    p, c, s = _pcs(x, dim)
    if out.numel() == 0:
        return out
    block_c, block_s = blocks(c)
    _softmax_kernel[(triton.cdiv(s, block_s), p)](x, out, c, s, BLOCK_C=block_c, BLOCK_S=block_s)
    return out


def argmax(
    x: torch.Tensor,
    dim: int = 1,
    keepdim: bool = True,
    one_hot: bool = False,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Argmax over channel dim ``dim`` (torch's: first maximum, NaN above all), as an index map or a one-hot.

    Args:
        x: Scores, ``[B, C, *spatial]`` for ``dim=1``; float16, bfloat16 or float32.
        dim: The channel dimension.
        keepdim: Keep the channel dim (size 1) in the index map; ignored for ``one_hot``.
        one_hot: Return ``[B, C, *spatial]`` with a 1 at the maximum instead of the index map.
        dtype: The output dtype.

    Returns:
        The index map (``[B, 1, *spatial]``, or ``[B, *spatial]`` without ``keepdim``) or the one-hot.

    Raises:
        ValueError: ``x`` has no channels, or an unsupported dtype.
    """
    dim = _channel_dim(x, dim)
    check_scores(x)
    p, c, s = _pcs(x, dim)
    if c == 0:
        raise ValueError(f"argmax over an empty channel dim {dim} of shape {tuple(x.shape)}")
    x = x.contiguous()
    shape = list(x.shape)
    if not one_hot:
        shape[dim] = 1
    out = torch.empty(shape, dtype=dtype, device=x.device)
    if out.numel() > 0:
        block_c, block_s = blocks(c)
        grid = (triton.cdiv(s, block_s), p)
        _argmax_kernel[grid](x, out, c, s, ONE_HOT=one_hot, BLOCK_C=block_c, BLOCK_S=block_s)
    return out if one_hot or keepdim else out.squeeze(dim)


def one_hot(labels: torch.Tensor, num_classes: int, dim: int = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One-hot of a label map along ``dim``, as MONAI's ``one_hot``; labels outside ``[0, num_classes)`` give zeros.

    Args:
        labels: ``[B, 1, *spatial]`` for ``dim=1``; any integer or float dtype (truncated toward zero).
        num_classes: Number of output channels, at least 1.
        dim: The channel dimension, of size 1 in ``labels``.
        dtype: The output dtype.

    Returns:
        ``labels`` with dim ``dim`` of size ``num_classes``.

    Raises:
        ValueError: ``num_classes`` is below 1 or ``labels.shape[dim]`` is not 1.
    """
    dim = _channel_dim(labels, dim)
    if num_classes < 1:
        raise ValueError(f"num_classes should be at least 1, got {num_classes}")
    if labels.shape[dim] != 1:
        raise ValueError(f"labels should have size 1 along dim {dim}, got shape {tuple(labels.shape)}")
    if labels.dtype == torch.bool:
        labels = labels.view(torch.uint8)
    labels = labels.contiguous()
    shape = list(labels.shape)
    shape[dim] = num_classes
    out = torch.empty(shape, dtype=dtype, device=labels.device)
    p, _, s = _pcs(labels, dim)
    if out.numel() > 0:
        block_c, block_s = blocks(num_classes)
        _one_hot_kernel[(triton.cdiv(s, block_s), p)](labels, out, num_classes, s, BLOCK_C=block_c, BLOCK_S=block_s)
    return out


def threshold(
    x: torch.Tensor, threshold: float, sigmoid: bool = False, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``(x >= threshold)``, or ``(sigmoid(x) >= threshold)`` with the sigmoid rounded to ``x``'s dtype first.

    The comparison is made as torch makes it between a tensor and a Python float: in ``x``'s dtype, so the threshold
    is rounded to that dtype (``0.3`` is ``0.2998`` in float16).

    Args:
        x: Any shape; float16, bfloat16 or float32.
        threshold: The threshold.
        sigmoid: Apply the sigmoid first.
        dtype: The output dtype.

    Returns:
        A tensor shaped like ``x`` holding 0 and 1.
    """
    check_scores(x)
    x = x.contiguous()
    out = torch.empty(x.shape, dtype=dtype, device=x.device)
    n = x.numel()
    if n > 0:
        rounded = float(torch.tensor(threshold, dtype=x.dtype))  # a host scalar: no device sync
        grid = (triton.cdiv(n, _BLOCK_FLAT),)
        _threshold_kernel[grid](x, out, n, rounded, SIGMOID=sigmoid, BLOCK=_BLOCK_FLAT)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# references
# ---------------------------------------------------------------------------------------------------------------------


def softmax_reference(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """What :func:`softmax` computes: ``torch.softmax`` in float32, cast back to ``x``'s dtype."""
    return torch.softmax(x.float(), dim=dim).to(x.dtype)


def argmax_reference(
    x: torch.Tensor,
    dim: int = 1,
    keepdim: bool = True,
    one_hot: bool = False,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """What :func:`argmax` computes: ``torch.argmax``, then a ``scatter_`` one-hot when asked."""
    idx = torch.argmax(x, dim=dim, keepdim=True)
    if one_hot:
        return torch.zeros(x.shape, dtype=dtype, device=x.device).scatter_(dim, idx, 1)
    return idx.to(dtype) if keepdim else idx.squeeze(dim).to(dtype)


def one_hot_reference(
    labels: torch.Tensor, num_classes: int, dim: int = 1, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """What :func:`one_hot` computes: the label (``long()``) compared with every class index."""
    shape = [1] * labels.dim()
    shape[dim] = num_classes
    classes = torch.arange(num_classes, device=labels.device).view(shape)
    return (labels.long() == classes).to(dtype)


def threshold_reference(
    x: torch.Tensor, threshold: float, sigmoid: bool = False, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """What :func:`threshold` computes: MONAI's ``Activations(sigmoid=True)`` then ``AsDiscrete(threshold=t)``."""
    if sigmoid:
        x = torch.sigmoid(x.float()).to(x.dtype)
    return (x >= threshold).to(dtype)
