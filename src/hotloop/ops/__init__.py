"""Fused, batched postprocessing and metric statistics for segmentation outputs.

Postprocessing (:mod:`hotloop.ops.postprocess`) is MONAI's ``Activations`` / ``AsDiscrete`` on a whole batch:
:func:`sigmoid`, :func:`softmax`, :func:`threshold`, :func:`argmax`, :func:`one_hot` and the fused chains
:func:`softmax_argmax` (→ one-hot) and :func:`sigmoid_threshold`.

Statistics (:mod:`hotloop.ops.stats`) are computed from logits or label maps and label maps or one-hot labels in one
pass, without one-hot tensors: :func:`class_counts` (per-sample per-class TP / FP / FN) and
:func:`confusion_matrix`.

Every op takes ``backend``: ``"auto"`` runs the Triton kernels of :mod:`hotloop.kernels` on CUDA tensors when triton
is installed (``pip install 'hotloop[triton]'``) and the vectorized torch path otherwise (with one warning on CUDA
without triton); ``"torch"`` and ``"triton"`` force one. No op reads a device value on the host.

Examples:
    >>> import torch
    >>> from hotloop import ops
    >>> logits = torch.randn(2, 3, 8, 8, 8)
    >>> ops.softmax_argmax(logits, to_onehot=3).shape
    torch.Size([2, 3, 8, 8, 8])
    >>> ops.class_counts(logits, torch.randint(0, 3, (2, 1, 8, 8, 8))).tp.shape
    torch.Size([2, 3])
"""

from hotloop.ops._dispatch import HAS_TRITON, Backend
from hotloop.ops.postprocess import argmax, one_hot, sigmoid, sigmoid_threshold, softmax, softmax_argmax, threshold
from hotloop.ops.stats import Activation, ClassCounts, class_counts, confusion_matrix

__all__ = [
    "HAS_TRITON",
    "Activation",
    "Backend",
    "ClassCounts",
    "argmax",
    "class_counts",
    "confusion_matrix",
    "one_hot",
    "sigmoid",
    "sigmoid_threshold",
    "softmax",
    "softmax_argmax",
    "threshold",
]
