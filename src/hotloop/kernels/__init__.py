"""Triton kernels of hotloop's fused ops, one module per kernel family, each with its pure-PyTorch reference.

- :mod:`hotloop.kernels.postprocess`: softmax over channels, argmax over channels (→ one-hot), one-hot of label
  maps, (sigmoid →) threshold.
- :mod:`hotloop.kernels.stats`: segmentation statistics in one pass — per-sample confusion matrices and
  per-sample per-class true-positive / predicted / labelled counts, from logits or label maps and label maps or
  one-hot labels, without building one-hot tensors.

:mod:`hotloop.kernels._common` holds what both share: the score dtypes, the tile sizes over a channel dim, the
argmax over channels and the rounding of float32 to a storage dtype.

Each module has three parts: the private ``@triton.jit`` kernels, the launchers (public functions that check their
inputs and pick the grid) and the ``*_reference`` functions, plain torch code that says what the kernels compute and
that the tests hold them to. The public ops in :mod:`hotloop.ops` dispatch to the launchers on CUDA.

The modules import triton (``pip install 'hotloop[triton]'``); this package itself does not, so that it can be
imported and inspected without it. Kernels are compiled on first launch for each new constexpr combination.
Under ``TRITON_INTERPRET=1`` (set before a module is imported: triton reads it when ``@triton.jit`` runs) they run in
Triton's interpreter on host tensors, which is how the test suite checks them on machines without a GPU.

This folder is ``src/hotloop/kernels``; the top-level ``kernels`` of the repository is a link to it.
"""

__all__: list[str] = []
