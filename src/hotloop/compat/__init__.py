"""Compatibility layers that keep other libraries' trainer APIs on hotloop's engine.

Each submodule is imported explicitly, e.g. ``from hotloop.compat.delira import PyTorchNetworkTrainer``.
"""

__all__: list[str] = []
