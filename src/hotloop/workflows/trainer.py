"""MONAI's trainers (``monai.engines.trainer``): ``Trainer``, ``SupervisedTrainer``, ``GanTrainer``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from ignite.engine import EventEnum
from ignite.metrics import Metric
from torch.optim.optimizer import Optimizer
from torch.utils.data import DataLoader

from hotloop.engine import Engine
from hotloop.reliability.nonfinite import NonFiniteGuard
from hotloop.step import Autocast, Iteration, StepOptions, TrainStep
from hotloop.workflows import _monai
from hotloop.workflows._iteration import (
    EngineScaler,
    InfererCall,
    MeanLoss,
    compile_option,
    plain,
    prepared,
    restore_after_compile,
    unwrap_for_compile,
)
from hotloop.workflows.utils import (
    CommonKeys,
    EngineStatsKeys,
    GanKeys,
    default_make_latent,
    default_metric_cmp_fn,
    default_prepare_batch,
)
from hotloop.workflows.workflow import Workflow

__all__ = ["GanTrainer", "SupervisedTrainer", "Trainer"]

_IMAGE, _LABEL, _PRED, _LOSS = CommonKeys.IMAGE, CommonKeys.LABEL, CommonKeys.PRED, CommonKeys.LOSS


class Trainer(Workflow):
    """The base of the trainers: a GradScaler when ``amp``, and training statistics."""

    def run(self) -> None:  # type: ignore[override]
        """Train; a second call continues from the current state."""
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        super().run()

    def get_stats(self, *vars: str) -> dict[str, Any]:
        """``rank``, ``current_epoch``, ``current_iteration``, ``total_epochs``, ``total_iterations``, and each state
        attribute named in ``vars`` (None when missing)."""
        stats: dict[str, Any] = {
            EngineStatsKeys.RANK: self.state.rank,
            EngineStatsKeys.CURRENT_EPOCH: self.state.epoch,
            EngineStatsKeys.CURRENT_ITERATION: self.state.iteration,
            EngineStatsKeys.TOTAL_EPOCHS: self.state.max_epochs,
            EngineStatsKeys.TOTAL_ITERATIONS: self.state.epoch_length,
        }
        for k in vars:
            stats[k] = getattr(self.state, k, None)
        return stats


def _accumulation(engine: Any) -> tuple[bool, bool]:
    """``(zero the gradients, step the optimizer)`` for this iteration under ``accumulation_steps`` (MONAI 1.6)."""
    acc = engine.accumulation_steps
    if acc == 1:
        return True, True
    epoch_length = engine.state.epoch_length
    if epoch_length is not None:
        local_iter = (engine.state.iteration - 1) % epoch_length  # 0-indexed within the epoch
        return local_iter % acc == 0, (local_iter + 1) % acc == 0 or (local_iter + 1) == epoch_length
    local_iter = engine.state.iteration - 1
    return local_iter % acc == 0, (local_iter + 1) % acc == 0


class SupervisedTrainer(Trainer):
    """Trains a network on images and labels: MONAI's ``monai.engines.SupervisedTrainer``.

    Each iteration: ``prepare_batch``; ``state.output = {"image", "label"}``; ``network.train()``;
    ``optimizer.zero_grad``; ``pred = inferer(image, network)`` (``FORWARD_COMPLETED``);
    ``loss = loss_function(pred, label).mean()`` (``LOSS_COMPLETED``); ``loss.backward()`` (``BACKWARD_COMPLETED``);
    ``optimizer.step()``; ``MODEL_COMPLETED``. Iteration events without handlers are not fired. The network, inferer
    and loss get the batch as ``prepare_batch`` gives it (a ``MetaTensor`` batch stays one), as in MONAI.

    The step is built by hotloop's step builder, like every API's: ``compile`` and the keyword-only ``cuda_graphs``,
    ``prefetch``, ``max_compiled_shapes`` and ``on_nonfinite`` are :class:`hotloop.step.StepOptions` and mean what they
    mean everywhere (``docs/hot-path.md``). With ``compile`` or ``cuda_graphs``, an iteration where no
    ``FORWARD_COMPLETED``, ``LOSS_COMPLETED`` or ``BACKWARD_COMPLETED`` handler must run between the pieces runs the
    whole compiled / captured step; the others run MONAI's pieces with the network compiled alone (``compile``) or
    eagerly (``cuda_graphs``, one warning per cause). Where MONAI unwraps MetaTensors, when compiled, so does hotloop:
    the compute runs on plain tensors, and ``image``, ``label`` and ``pred`` are cast back before ``MODEL_COMPLETED``
    (``loss`` stays plain), with MONAI's warning. A CUDA-graphed iteration runs on plain tensors; ``pred`` and
    ``loss`` get the image's metadata after it and are detached copies. Graphs are captured anew at each
    :meth:`run`. Not graphed: ``amp``, ``accumulation_steps > 1``.

    Args:
        device: the device to run on.
        max_epochs: epochs to train.
        train_data_loader: an iterable or ``DataLoader``.
        network: the model.
        optimizer: its optimizer.
        loss_function: ``loss_function(pred, label)``; its mean is the loss.
        epoch_length: iterations per epoch.
        non_blocking: passed to ``prepare_batch``.
        prepare_batch: see :class:`~hotloop.workflows.Workflow`.
        iteration_update: replaces ``_iteration``.
        inferer: ``inferer(inputs, network, *args, **kwargs)``; ``SimpleInferer()`` by default.
        postprocessing: a transform applied to the output on ``MODEL_COMPLETED``.
        key_train_metric: ``{name: Metric}`` whose best value is tracked.
        additional_metrics: more metrics.
        metric_cmp_fn: ``(current, best) -> bool``.
        train_handlers: objects with ``attach(engine)``.
        amp: autocast the forward pass and scale the loss with a ``GradScaler``.
        event_names: more events to register.
        event_to_attr: maps events to state attributes.
        decollate: per-sample lists after the model work.
        optim_set_to_none: ``optimizer.zero_grad(set_to_none=...)``.
        to_kwargs: further ``Tensor.to`` arguments.
        amp_kwargs: arguments for ``torch.autocast``.
        postprocessing_mode: hotloop only (keyword-only); see :class:`~hotloop.workflows.Workflow`.
        compile: hotloop's ``compile`` (:class:`~hotloop.step.StepOptions`): False, True, ``"auto"`` or a dict of
            ``torch.compile`` arguments.
        compile_kwargs: ``torch.compile`` arguments when ``compile`` is True.
        accumulation_steps: mini-batches per optimizer step; at an epoch's end a partial group is stepped too.
        cuda_graphs: hotloop only (keyword-only); see :class:`~hotloop.step.StepOptions`.
        prefetch: hotloop only (keyword-only); ``state.batch`` then holds the batch on the device.
        max_compiled_shapes: hotloop only (keyword-only).
        on_nonfinite: hotloop only (keyword-only): watch ``state.output["loss"]`` on the device.

    Raises:
        TypeError: ``prefetch`` is not a bool.
        ValueError: ``accumulation_steps`` is not a positive integer, or a step option is invalid.
        RuntimeError: ``cuda_graphs=True`` without a usable CUDA device.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        network: torch.nn.Module,
        optimizer: Optimizer,
        loss_function: Callable,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        iteration_update: Callable[[Engine, Any], Any] | None = None,
        inferer: Callable | None = None,
        postprocessing: Callable | None = None,
        key_train_metric: dict[str, Metric] | None = None,
        additional_metrics: dict[str, Metric] | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        train_handlers: Sequence | None = None,
        amp: bool = False,
        event_names: list[str | EventEnum | type[EventEnum]] | None = None,
        event_to_attr: dict | None = None,
        decollate: bool = True,
        optim_set_to_none: bool = False,
        to_kwargs: dict | None = None,
        amp_kwargs: dict | None = None,
        compile: bool | str | dict = False,
        compile_kwargs: dict | None = None,
        accumulation_steps: int = 1,
        *,
        postprocessing_mode: str = "fused",
        cuda_graphs: bool | str = False,
        prefetch: bool = False,
        max_compiled_shapes: int = 4,
        on_nonfinite: str | NonFiniteGuard | None = None,
    ) -> None:
        if not isinstance(accumulation_steps, int) or accumulation_steps < 1:
            raise ValueError(f"`accumulation_steps` must be a positive integer, got {accumulation_steps!r}.")
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            handlers=train_handlers,
            amp=amp,
            event_names=event_names,
            event_to_attr=event_to_attr,
            decollate=decollate,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
            postprocessing_mode=postprocessing_mode,
        )
        options = StepOptions(
            compile_option(compile, compile_kwargs),
            cuda_graphs,
            prefetch=prefetch,
            max_compiled_shapes=max_compiled_shapes,
            on_nonfinite=on_nonfinite,
        )
        self.prefetch = prefetch
        self.network = network
        self.compile = compile
        self.optimizer = optimizer
        self.loss_function = loss_function
        self.inferer = _monai.default_inferer() if inferer is None else inferer
        self.optim_set_to_none = optim_set_to_none
        self.accumulation_steps = accumulation_steps
        self.cuda_graphs = cuda_graphs
        events = self._hl_events
        self._hl_split = (events.FORWARD_COMPLETED, events.LOSS_COMPLETED, events.BACKWARD_COMPLETED)
        self._hl_step = self._hl_build_step(options)
        self._hl_step.attach(self)  # the engine-side options, and self.step_choice

    def _hl_build_step(self, options: StepOptions) -> TrainStep:
        """MONAI's training step described to hotloop's step builder (the parts it closes over, not the trainer)."""
        iteration = Iteration(
            self.network,
            InfererCall(self.inferer),
            loss=MeanLoss(self.loss_function),
            optimizer=self.optimizer,
            scaler=EngineScaler(self) if self.amp else None,
            accumulation=self.accumulation_steps,
            set_to_none=self.optim_set_to_none,
            autocast=Autocast.cuda(self.amp, **self.amp_kwargs),
            clone_outputs=True,  # state.output keeps pred and loss past the next replay
            graph_blocker="amp=True" if self.amp else None,
            accumulation_name="accumulation_steps",
            name="SupervisedTrainer",
        )
        return TrainStep(iteration, options, self.state.device, self._hl_parts())

    def _hl_parts(self) -> tuple[Any, ...]:
        return (self.network, self.optimizer, self.loss_function, self.inferer)

    def run(self) -> None:  # type: ignore[override]
        """Train; a second call continues from the current state (CUDA graphs, if any, are captured anew)."""
        # A checkpoint loaded between runs may have replaced the optimizer state the graphs point at.
        self._hl_step.reset()
        super().run()

    def _iteration(self, engine: SupervisedTrainer, batchdata: dict[str, torch.Tensor]) -> dict:
        """One training iteration; returns ``state.output`` (``image``, ``label``, ``pred``, ``loss``).

        Raises:
            ValueError: ``batchdata`` is None.
        """
        inputs, targets, args, kwargs = prepared(engine, batchdata)
        step = engine._hl_step
        zero, should_step = _accumulation(engine)
        fused = step.takes(engine, engine._hl_split, engine._hl_parts(), (args, kwargs))
        if fused and step.variant == "graphed":
            engine._hl_graphed_run(inputs, targets, zero, should_step)
        else:
            meta_type = engine._hl_meta_type
            inputs_meta = targets_meta = None
            if step.compiled:
                inputs, targets, inputs_meta, targets_meta = unwrap_for_compile(inputs, targets, meta_type)
            engine.state.output = {_IMAGE: inputs, _LABEL: targets}
            engine.network.train()
            if fused:
                engine._hl_fused_run(inputs, targets, zero, should_step)
            else:
                engine._hl_pieces(inputs, targets, args, kwargs, zero, should_step)
            restore_after_compile(engine.state.output, inputs, targets, inputs_meta, targets_meta, meta_type)
        engine._fire_if_handled(engine._hl_events.MODEL_COMPLETED)
        return engine.state.output

    def _hl_fused_run(self, x: Any, y: Any, zero: bool, should_step: bool) -> tuple[Any, Any]:
        """The whole step as the builder built it (compiled or captured); ``state.output`` gets ``pred``, ``loss``."""
        step = self._hl_step
        step.begin(zero)
        pred, loss = step.run(x, y)
        step.finish(loss, self.state.iteration, zero, should_step)
        output = self.state.output
        output[_PRED], output[_LOSS] = pred, loss
        return pred, loss

    def _hl_graphed_run(self, inputs: Any, targets: Any, zero: bool, should_step: bool) -> None:
        """The iteration through the CUDA graph, on plain tensors; ``pred`` and ``loss`` get the image's metadata."""
        self.state.output = {_IMAGE: inputs, _LABEL: targets}
        meta_type = self._hl_meta_type
        x, y = plain(inputs, meta_type), plain(targets, meta_type)
        self.network.train()
        pred, loss = self._hl_fused_run(x, y, zero, should_step)
        if x is not inputs:
            output = self.state.output
            output[_PRED], output[_LOSS] = _monai.like(pred, inputs), _monai.like(loss, inputs)

    def _hl_pieces(self, inputs: Any, targets: Any, args: tuple, kwargs: dict, zero: bool, should_step: bool) -> None:
        """MONAI's iteration piece by piece, with ``IterationEvents`` between the pieces."""
        step = self._hl_step
        step.begin(zero, fused=False, optimizer=self.optimizer)
        with step.it.autocast():
            loss = self._hl_pred_loss(inputs, targets, args, kwargs)
        step.backward(loss)
        self._fire_if_handled(self._hl_events.BACKWARD_COMPLETED)
        step.finish(loss, self.state.iteration, zero, should_step, fused=False, optimizer=self.optimizer)

    def _hl_pred_loss(self, inputs: Any, targets: Any, args: tuple, kwargs: dict) -> torch.Tensor:
        """MONAI's ``_compute_pred_loss``: ``state.output`` gets ``pred`` and ``loss``; returns the loss to back-prop.

        A handler of ``FORWARD_COMPLETED`` / ``LOSS_COMPLETED`` that replaces ``state.output["pred"]`` /
        ``["loss"]`` is honoured, as in MONAI: the replacement is what the loss / the backward pass uses.
        """
        step = self._hl_step
        compiled = step.compiled_model
        forward = compiled if compiled is not None and self.network is step.it.model else self.network
        output = self.state.output
        output[_PRED] = self.inferer(inputs, forward, *args, **kwargs)  # pred: [B, C, *spatial]
        self._fire_if_handled(self._hl_events.FORWARD_COMPLETED)
        output = self.state.output
        output[_LOSS] = self.loss_function(output[_PRED], targets).mean()
        self._fire_if_handled(self._hl_events.LOSS_COMPLETED)
        return self.state.output[_LOSS]


class GanTrainer(Trainer):
    """Trains a generator and a discriminator: MONAI's ``monai.engines.GanTrainer``.

    For each batch of reals: generate fakes from random latents; update the discriminator ``d_train_steps``
    times on fakes and reals; with ``g_update_latents`` generate new fakes; update the generator.
    ``state.output`` holds ``reals``, ``fakes``, ``latents``, ``g_loss`` and ``d_loss`` (Python floats, as in MONAI).

    Args:
        device: the device to run on.
        max_epochs: epochs to train.
        train_data_loader: a ``DataLoader`` (its ``batch_size`` sets the number of latents).
        g_network: the generator.
        g_optimizer: its optimizer.
        g_loss_function: ``g_loss_function(fakes)``.
        d_network: the discriminator.
        d_optimizer: its optimizer.
        d_loss_function: ``d_loss_function(fakes, reals)``.
        epoch_length: iterations per epoch.
        g_inferer: runs the generator; ``SimpleInferer()`` by default.
        d_inferer: runs the discriminator; ``SimpleInferer()`` by default.
        d_train_steps: discriminator updates per batch.
        latent_shape: the size of a latent code.
        non_blocking: passed to the prepare functions.
        d_prepare_batch: returns the reals of a batch.
        g_prepare_batch: ``(num_latents, latent_size, device, non_blocking, **to_kwargs)`` returning latents.
        g_update_latents: draw new latents for the generator update.
        iteration_update: replaces ``_iteration``.
        postprocessing: a transform applied to the output on ``MODEL_COMPLETED``.
        key_train_metric: ``{name: Metric}`` whose best value is tracked.
        additional_metrics: more metrics.
        metric_cmp_fn: ``(current, best) -> bool``.
        train_handlers: objects with ``attach(engine)``.
        decollate: per-sample lists after the model work.
        optim_set_to_none: ``zero_grad(set_to_none=...)``.
        to_kwargs: further ``Tensor.to`` arguments.
        amp_kwargs: arguments for ``torch.autocast``.
        postprocessing_mode: hotloop only (keyword-only); see :class:`~hotloop.workflows.Workflow`.

    Raises:
        ValueError: ``train_data_loader`` is not a ``DataLoader``.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: DataLoader,
        g_network: torch.nn.Module,
        g_optimizer: Optimizer,
        g_loss_function: Callable,
        d_network: torch.nn.Module,
        d_optimizer: Optimizer,
        d_loss_function: Callable,
        epoch_length: int | None = None,
        g_inferer: Callable | None = None,
        d_inferer: Callable | None = None,
        d_train_steps: int = 1,
        latent_shape: int = 64,
        non_blocking: bool = False,
        d_prepare_batch: Callable = default_prepare_batch,
        g_prepare_batch: Callable = default_make_latent,
        g_update_latents: bool = True,
        iteration_update: Callable[[Engine, Any], Any] | None = None,
        postprocessing: Callable | None = None,
        key_train_metric: dict[str, Metric] | None = None,
        additional_metrics: dict[str, Metric] | None = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        train_handlers: Sequence | None = None,
        decollate: bool = True,
        optim_set_to_none: bool = False,
        to_kwargs: dict | None = None,
        amp_kwargs: dict | None = None,
        *,
        postprocessing_mode: str = "fused",
    ) -> None:
        if not isinstance(train_data_loader, DataLoader):
            raise ValueError("train_data_loader must be PyTorch DataLoader.")
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=d_prepare_batch,
            iteration_update=iteration_update,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            handlers=train_handlers,
            postprocessing=postprocessing,
            decollate=decollate,
            to_kwargs=to_kwargs,
            amp_kwargs=amp_kwargs,
            postprocessing_mode=postprocessing_mode,
        )
        self.g_network = g_network
        self.g_optimizer = g_optimizer
        self.g_loss_function = g_loss_function
        self.g_inferer = _monai.default_inferer() if g_inferer is None else g_inferer
        self.d_network = d_network
        self.d_optimizer = d_optimizer
        self.d_loss_function = d_loss_function
        self.d_inferer = _monai.default_inferer() if d_inferer is None else d_inferer
        self.d_train_steps = d_train_steps
        self.latent_shape = latent_shape
        self.g_prepare_batch = g_prepare_batch
        self.g_update_latents = g_update_latents
        self.optim_set_to_none = optim_set_to_none

    def _latents(self, batch_size: int) -> torch.Tensor:
        return self.g_prepare_batch(
            num_latents=batch_size,
            latent_size=self.latent_shape,
            device=self.state.device,
            non_blocking=self.non_blocking,
            **self.to_kwargs,
        )

    def _iteration(self, engine: GanTrainer, batchdata: dict | Sequence) -> dict[str, Any]:
        """One GAN iteration; returns ``{"reals", "fakes", "latents", "g_loss", "d_loss"}``.

        The two losses are read to the host (``.item()``) every iteration because MONAI's output holds floats.

        Raises:
            ValueError: ``batchdata`` is None.
        """
        if batchdata is None:
            raise ValueError("must provide batch data for current iteration.")
        d_input = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        batch_size: Any = engine.data_loader.batch_size  # type: ignore[union-attr]
        g_input = engine._latents(batch_size)
        g_output = engine.g_inferer(g_input, engine.g_network)
        d_total_loss = torch.zeros(1)
        for _ in range(engine.d_train_steps):
            engine.d_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
            dloss = engine.d_loss_function(g_output, d_input)
            dloss.backward()
            engine.d_optimizer.step()
            d_total_loss += dloss.item()
        if engine.g_update_latents:
            g_input = engine._latents(batch_size)
        g_output = engine.g_inferer(g_input, engine.g_network)
        engine.g_optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        g_loss = engine.g_loss_function(g_output)
        g_loss.backward()
        engine.g_optimizer.step()
        return {
            GanKeys.REALS: d_input,
            GanKeys.FAKES: g_output,
            GanKeys.LATENTS: g_input,
            GanKeys.GLOSS: g_loss.item(),
            GanKeys.DLOSS: d_total_loss.item(),
        }
