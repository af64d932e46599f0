"""delira parity: ``AbstractNetworkTrainer`` and ``PyTorchNetworkTrainer`` on hotloop's :class:`~hotloop.Engine`.

Change the import::

    from delira.training import PyTorchNetworkTrainer             # before
    from hotloop.compat.delira import PyTorchNetworkTrainer       # after

The constructor, ``train``, ``predict``, the network's ``prepare_batch`` and ``closure``, the optimizer wrappers, the
checkpoint files (and the resume from them) and the callback protocol are delira's (0.3, the PyTorch backend:
``delira/training/pytorch_trainer.py``). Inside, the epochs and iterations are run by a :class:`hotloop.Engine`
(``trainer.engine``; the prediction pass by ``trainer.eval_engine``) and the trainer's hooks are handlers of its
events.

The step (delira's ``AbstractPyTorchNetwork`` interface): every batch goes through the network's
``prepare_batch(batch, input_device, output_device)``; a network with a ``closure`` is trained and evaluated by it,
``closure(module, data_dict, optimizers, criterions=..., metrics=..., fold=..., batch_nr=...)``. A network without
them gets hotloop's versions of delira's defaults: ``batch["data"]`` to the input device and every other tensor or
NumPy entry (a label, in key order) to the output device; ``preds = network(batch["data"])``; each criterion and
metric called as ``fn(preds, *labels)``; the sum of the criterions back-propagated and ``optimizers["default"]``
stepped; losses and metrics reported with delira's ``"val_"`` prefix during validation. That step is built by
hotloop's step builder (:func:`hotloop.step.build_train_step`, the one ``create_supervised_trainer`` uses), so
hotloop's step options (:class:`hotloop.step.StepOptions`: ``compile``, ``cuda_graphs``, ``no_sync``, ``prefetch``,
``max_compiled_shapes``, ``on_nonfinite``) work with it as they do everywhere; ``hotloop_step=True`` selects it for a
network that has a closure.

The package is split by concern, as delira's ``training`` package is: ``abstract_trainer`` (delira's abstract API),
``pytorch_trainer`` (the trainer: setup, engines and their events, ``train``, ``predict``), ``checkpoints`` (the files
and the resume), ``steps`` (the closure's steps and hotloop's), ``data`` (batches, ``prepare_batch``, data managers),
``prediction`` (collecting ``predict``'s results), ``callbacks``, ``optimizers`` and ``checks`` (argument checks).

Data: ``train`` and ``predict`` accept delira's data managers (objects with ``get_batchgen()``; ``train`` calls
``get_batchgen(seed=epoch)`` each epoch) and batch generators, a :class:`torch.utils.data.DataLoader`, or any
re-iterable of batches.
"""

from hotloop.compat.delira.abstract_trainer import AbstractNetworkTrainer
from hotloop.compat.delira.callbacks import AbstractCallback, InvalidCallbackError, PyTorchSchedulerCallback
from hotloop.compat.delira.optimizers import DefaultOptimWrapperTorch, create_optims_default_pytorch
from hotloop.compat.delira.pytorch_trainer import PyTorchNetworkTrainer

__all__ = [
    "AbstractCallback",
    "AbstractNetworkTrainer",
    "DefaultOptimWrapperTorch",
    "InvalidCallbackError",
    "PyTorchNetworkTrainer",
    "PyTorchSchedulerCallback",
    "create_optims_default_pytorch",
]
