"""What the kernel modules share: the score dtypes, the tile sizes over a channel dim, and two ``@triton.jit``
helpers (the argmax over channels, rounding float32 to a storage dtype)."""

import torch

from hotloop._optional import TRITON

try:
    import triton
    import triton.language as tl
except ModuleNotFoundError as error:  # without triton: one error naming the extra, not a bare "No module named"
    if error.name != "triton":
        raise
    raise TRITON.error("hotloop.kernels (Triton kernels)") from error

__all__ = ["SCORE_DTYPES", "blocks", "channel_argmax", "check_scores", "round_to"]

#: The dtypes the kernels read scores (logits, probabilities) in; arithmetic is float32 whatever the storage.
SCORE_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_INT32_MAX = tl.constexpr(2147483647)  # "no NaN seen" marker for channel_argmax

# Tile sizes: at most 4096 values per program (32 per thread with 4 warps). Channel tiles of 16 keep large-C volumes
# (105 classes) in 7 iterations; small C gets wide voxel blocks. Not tuned on a GPU: none was available here.
_MAX_BLOCK_C = 16
_TILE = 4096


def blocks(channels: int) -> tuple[int, int]:
    """``(BLOCK_C, BLOCK_S)`` for a channel dim of ``channels``: channel tiles of at most 16, 4096 values a program."""
    block_c = min(triton.next_power_of_2(max(channels, 1)), _MAX_BLOCK_C)
    return block_c, _TILE // block_c


def check_scores(x: torch.Tensor, name: str = "x") -> None:
    """Raises ``ValueError`` unless ``x`` holds scores in one of :data:`SCORE_DTYPES`."""
    if x.dtype not in SCORE_DTYPES:
        raise ValueError(f"{name} should be float16, bfloat16 or float32 for the Triton kernels, got {x.dtype}")


@triton.jit
def channel_argmax(x_ptr, base, offs_s, mask_s, C, S, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """For each of BLOCK_S voxels, the index of its largest channel value, as torch.argmax picks it: the first
    maximum, and a NaN above everything (the first NaN wins)."""
    best = tl.full([BLOCK_S], float("-inf"), tl.float32)
    best_idx = tl.zeros([BLOCK_S], tl.int32)
    nan_idx = tl.full([BLOCK_S], _INT32_MAX, tl.int32)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask = (offs_c[:, None] < C) & mask_s[None, :]
        ptrs = x_ptr + base + offs_c[:, None].to(tl.int64) * S + offs_s[None, :]
        x = tl.load(ptrs, mask=mask, other=float("-inf")).to(tl.float32)
        is_nan = x != x
        nan_idx = tl.minimum(nan_idx, tl.min(tl.where(is_nan, offs_c[:, None], _INT32_MAX), axis=0))
        x = tl.where(is_nan, float("-inf"), x)
        tile_max, tile_idx = tl.max(x, axis=0, return_indices=True, return_indices_tie_break_left=True)
        # Strictly greater: an equal maximum in a later tile does not replace the first one.
        better = tile_max > best
        best_idx = tl.where(better, tile_idx + c0, best_idx)
        best = tl.where(better, tile_max, best)
    return tl.where(nan_idx < _INT32_MAX, nan_idx, best_idx)


@triton.jit
def round_to(v, dtype: tl.constexpr):
    """float32 ``v`` rounded to ``dtype`` (to nearest, ties to even), as float32."""
    if dtype == tl.bfloat16:
        # By hand: Triton's interpreter truncates (and its "rtne" mode misrounds) float32 → bfloat16 casts.
        bits = v.to(tl.uint32, bitcast=True)
        bits = bits + 0x7FFF + ((bits >> 16) & 1)
        return ((bits >> 16) << 16).to(tl.float32, bitcast=True)
    else:
        return v.to(dtype).to(tl.float32)
