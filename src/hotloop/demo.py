"""``hotloop demo``: train and evaluate a small CNN with hotloop and, epoch by epoch in turn, on Ignite's stock trainer.

The demo trains on scikit-learn's digits (1797 grayscale 8x8 images shipped inside scikit-learn: no download), or on
an image folder given with ``--data`` (``train/`` and ``val/``, each with one sub-folder per class). It uses
:func:`hotloop.create_supervised_trainer` and :func:`hotloop.create_supervised_evaluator` with Ignite's own handlers:
``ProgressBar`` for each epoch and ``Checkpoint``/``DiskSaver`` for the best models. After each epoch it prints the
validation accuracy and loss and the training throughput. Beside it, a fresh copy of the same model (same initial
weights, data order and seed) trains with ``ignite.engine.create_supervised_trainer``, the two alternating epoch by
epoch so that a busy machine slows both alike; the report puts their accuracy and samples/s side by side, and compares
the speeds as the median of the per-epoch ratios with their range ("equal within noise" when the range spans 1).

Input pipeline (``--loader auto``): when NVIDIA DALI is installed the digits are written as PNG files under
``--output`` and read back by :func:`hotloop.data.image_folder_loader` (``backend="dali"``); otherwise they stay in
memory and go through a torch ``DataLoader`` (pinned memory on CUDA). ``--data`` always reads through
:func:`hotloop.data.image_folder_loader`.

Examples:
    .. code-block:: bash

        hotloop demo                          # digits, 5 epochs, CPU or CUDA (whichever is there)
        hotloop demo --epochs 2 --device cpu --output /tmp/demo
        hotloop demo --data ~/images --image-size 64 --batch-size 32
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from hotloop._optional import DALI, PILLOW, SKLEARN, TQDM, require

__all__ = [
    "DemoConfig",
    "DemoReport",
    "RunResult",
    "add_arguments",
    "check_requirements",
    "config_from_args",
    "epoch_ratios",
    "make_model",
    "resolve_device",
    "run_demo",
    "speed_verdict",
]

_LEARNING_RATE = 0.05
_MOMENTUM = 0.9
_VAL_FRACTION = 0.2
_DIGITS_SIZE = (8, 8)
_DEFAULT_DATA_SIZE = 32


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs; the command-line options map one to one onto these fields.

    Args:
        epochs: Training epochs of each run.
        batch_size: Samples per training and validation batch.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available).
        compile: Passed to hotloop's trainer and evaluator as ``compile=True`` (the Ignite run stays eager).
        data: An image folder holding ``train/`` and ``val/``, each with one sub-folder per class, instead of the
            digits; ``None`` for the digits.
        image_size: Height and width images are resized to (``--data`` only; the digits are 8x8).
        output: Folder for the checkpoints (and the digits as image files on the DALI path).
        seed: Seed of the weights, the split and the data order, shared by both runs.
        compare: Also run Ignite's stock trainer and report it.
        num_threads: DALI's CPU threads (``--data`` and the DALI path).
        loader: How the digits are fed: ``"dali"`` (written as PNG files, read by DALI), ``"memory"`` (tensors in a
            torch ``DataLoader``) or ``"auto"`` (DALI when it is installed, else memory).
    """

    epochs: int = 5
    batch_size: int = 64
    device: str = "auto"
    compile: bool = False
    data: Path | None = None
    image_size: int = _DEFAULT_DATA_SIZE
    output: Path = Path("hotloop-demo")
    seed: int = 0
    compare: bool = True
    num_threads: int = 2
    loader: str = "auto"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "image_size", "num_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DemoConfig.{name} should be a positive integer, got {value!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"DemoConfig.device should be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.loader not in ("auto", "dali", "memory"):
            raise ValueError(f"DemoConfig.loader should be 'auto', 'dali' or 'memory', got {self.loader!r}")
        # Paths given as strings are taken as paths (frozen dataclass: set through object.__setattr__).
        object.__setattr__(self, "output", Path(self.output))
        if self.data is not None:
            object.__setattr__(self, "data", Path(self.data))


@dataclass
class RunResult:
    """The figures of one training run.

    Args:
        engine: ``"hotloop"`` or ``"ignite"``.
        accuracy: Validation accuracy after the last epoch.
        loss: Validation loss (mean cross-entropy) after the last epoch.
        epoch_seconds: Wall time of each training epoch (validation excluded).
        train_samples: Training samples per epoch.
    """

    engine: str
    accuracy: float = math.nan
    loss: float = math.nan
    epoch_seconds: list[float] = field(default_factory=list)
    train_samples: int = 0

    @property
    def samples_per_second(self) -> float:
        """Training throughput: the median over the epochs after the first (which pays for warm-up and compiling)."""
        timed = self.epoch_seconds[1:] or self.epoch_seconds
        return self.train_samples / statistics.median(timed) if timed else math.nan


@dataclass
class DemoReport:
    """What :func:`run_demo` measured.

    Args:
        hotloop: The hotloop run.
        ignite: The run on Ignite's stock trainer, or ``None`` when ``compare`` is off.
        checkpoints: The checkpoint files kept on disk.
        data_description: One line saying which data went through which pipeline.
        device: The device both runs used.
    """

    hotloop: RunResult
    ignite: RunResult | None
    checkpoints: list[Path]
    data_description: str
    device: str


@dataclass
class _Data:
    """The demo's data: ``make_train()``/``make_val()`` build fresh, identically seeded iterables of (x, y)."""

    make_train: Callable[[], Iterable[Any]]
    make_val: Callable[[], Iterable[Any]]
    num_train: int
    num_val: int
    in_channels: int
    num_classes: int
    description: str


def make_model(in_channels: int = 1, num_classes: int = 10, seed: int = 0) -> torch.nn.Module:
    """The demo's CNN: two 3x3 convolutions, a max-pool, a 4x4 adaptive pool and a linear classifier.

    The adaptive pool makes it take any image size of at least 2x2 (on 8x8 digits it is the identity).

    Args:
        in_channels: Image channels.
        num_classes: Classes to score.
        seed: Seed of the initial weights (the global RNG is left as it was).

    Returns:
        The model, on the CPU.

    Examples:
        >>> model = make_model()
        >>> model(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Sequential(
            torch.nn.Conv2d(in_channels, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.AdaptiveAvgPool2d(4),
            torch.nn.Flatten(),
            torch.nn.Linear(32 * 4 * 4, num_classes),
        )


# ---------------------------------------------------------------------------------------------------------------- data


def _digits_split(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the train and val digits: the split :func:`hotloop.data.write_digits_folder` writes."""
    from sklearn.datasets import load_digits

    count = len(load_digits().target)
    order = np.random.default_rng(seed).permutation(count)
    n_val = int(round(count * _VAL_FRACTION))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _tensor_loader(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int, pin: bool
) -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(seed)
    dataset = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, pin_memory=pin
    )


def _digits_in_memory(config: DemoConfig, device: str) -> _Data:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # x: [1797, 1, 8, 8] in [0, 1]
    y = torch.tensor(digits.target, dtype=torch.int64)
    train, val = (torch.from_numpy(index) for index in _digits_split(config.seed))
    pin = device == "cuda"
    return _Data(
        make_train=lambda: _tensor_loader(x[train], y[train], config.batch_size, True, config.seed, pin),
        make_val=lambda: _tensor_loader(x[val], y[val], config.batch_size, False, config.seed, pin),
        num_train=len(train),
        num_val=len(val),
        in_channels=1,
        num_classes=10,
        description=f"scikit-learn digits, {len(train)} train / {len(val)} val, 1x8x8, in memory → torch DataLoader",
    )


def _folder_data(
    data_module: Any,
    train_root: Path,
    val_root: Path,
    config: DemoConfig,
    device: str,
    *,
    size: tuple[int, int],
    grayscale: bool,
    augment: bool,
    backend: str,
    source: str,
) -> _Data:
    """Both splits read by :func:`hotloop.data.image_folder_loader`, as ``(x, y)`` tuples.

    ``augment`` turns on the loader's random crop and left-right flip for training (not for digits: a flipped 2 is
    no 2).
    """
    _, train_labels, classes = data_module.list_image_folder(train_root)
    _, val_labels, val_classes = data_module.list_image_folder(val_root)
    if val_classes != classes:
        raise ValueError(f"the train and val folders have different classes: {classes} and {val_classes}")

    def loader(root: Path, train: bool) -> Iterable[Any]:
        return data_module.image_folder_loader(
            root,
            batch_size=config.batch_size,
            image_size=size,
            train=train and augment,
            shuffle=train,
            grayscale=grayscale,
            num_threads=config.num_threads,
            device=device if device == "cuda" else None,  # None: batches on the host
            backend=backend,
            seed=config.seed,
            as_tuple=True,
        )

    channels = 1 if grayscale else 3
    return _Data(
        make_train=lambda: loader(train_root, True),
        make_val=lambda: loader(val_root, False),
        num_train=len(train_labels),
        num_val=len(val_labels),
        in_channels=channels,
        num_classes=len(classes),
        description=f"{source}, {len(train_labels)} train / {len(val_labels)} val, {channels}x{size[0]}x{size[1]}, "
        f"{len(classes)} classes → hotloop.data.image_folder_loader(backend={backend!r})",
    )


def _digits_as_files(data_module: Any, config: DemoConfig, device: str) -> _Data:
    root = config.output / "digits"
    for split in ("train", "val"):
        data_module.write_digits_folder(
            root / split, fmt="png", split=split, val_fraction=_VAL_FRACTION, seed=config.seed
        )
    return _folder_data(
        data_module,
        root / "train",
        root / "val",
        config,
        device,
        size=_DIGITS_SIZE,
        grayscale=True,
        augment=False,
        backend="dali",
        source=f"scikit-learn digits written as PNG to {root}",
    )


def _split_folders(root: Path) -> tuple[Path, Path] | None:
    train, val = root / "train", root / "val"
    return (train, val) if train.is_dir() and val.is_dir() else None


def _user_folder(data_module: Any, config: DemoConfig, device: str) -> _Data:
    assert config.data is not None
    splits = _split_folders(config.data)
    if splits is None:
        raise ValueError(
            f"--data {str(config.data)!r} should hold train/ and val/ folders, each with one sub-folder per class "
            "(DIR/train/<class>/<image>, DIR/val/<class>/<image>)"
        )
    backend = "dali" if data_module.HAS_DALI else "torch"
    size = (config.image_size, config.image_size)
    return _folder_data(
        data_module,
        *splits,
        config,
        device,
        size=size,
        grayscale=False,
        augment=True,
        backend=backend,
        source=str(config.data),
    )


def _digits_through_dali(config: DemoConfig) -> bool:
    """Whether the digits go through DALI: ``--loader dali``, or ``auto`` with DALI installed."""
    return config.loader == "dali" or (config.loader == "auto" and DALI.installed())


def check_requirements(config: DemoConfig) -> None:
    """Raises before any work when a package the run needs is missing, naming every such package and the extra.

    The digits need scikit-learn; Ignite's progress bar needs tqdm; image files are written or decoded with Pillow
    (the digits on the DALI path, ``--data`` without DALI); ``--loader dali`` needs DALI.

    Args:
        config: What the run would do.

    Raises:
        ModuleNotFoundError: A package is missing; the message names it and ``hotloop[bench]`` or
            ``hotloop[dali]``.
    """
    if config.data is None and config.loader == "dali" and not DALI.installed():
        raise ModuleNotFoundError(
            "--loader dali reads the digits with NVIDIA DALI, which is not installed: pip install 'hotloop[dali]' "
            "(or use --loader memory)",
            name=DALI.module,
        )
    needs = [TQDM]
    if config.data is None:
        needs.append(SKLEARN)
    if (config.data is None and _digits_through_dali(config)) or (config.data is not None and not DALI.installed()):
        needs.append(PILLOW)
    require("hotloop demo", *needs, extra="bench")


def _make_data(config: DemoConfig, device: str) -> _Data:
    from hotloop import data as data_module

    if config.data is not None:
        return _user_folder(data_module, config, device)
    if _digits_through_dali(config):
        return _digits_as_files(data_module, config, device)
    return _digits_in_memory(config, device)


# ----------------------------------------------------------------------------------------------------------- training


def resolve_device(device: str) -> str:
    """``"auto"`` → ``"cuda"`` when CUDA is available, else ``"cpu"``; other values are returned as given.

    Args:
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Returns:
        ``"cpu"`` or ``"cuda"``.

    Raises:
        ValueError: ``device`` is ``"cuda"`` and CUDA is not available.
    """
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device cuda: CUDA is not available (torch {torch.__version__}); use --device cpu or auto")
    return device


class _EpochTimer:
    """Wall time of each training epoch, the device synced before the clock stops (a no-op on CPU)."""

    def __init__(self, device: str) -> None:
        self.seconds: list[float] = []
        self._device = device
        self._start = 0.0

    def attach(self, trainer: Any) -> None:
        from ignite.engine import Events

        trainer.add_event_handler(Events.EPOCH_STARTED, self._started)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._completed)

    def _started(self, _: Any) -> None:
        self._start = time.perf_counter()

    def _completed(self, _: Any) -> None:
        if self._device == "cuda":
            torch.cuda.synchronize()
        self.seconds.append(time.perf_counter() - self._start)


def _setup(data: _Data, config: DemoConfig, device: str) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = make_model(data.in_channels, data.num_classes, config.seed).to(device)
    return model, torch.optim.SGD(model.parameters(), lr=_LEARNING_RATE, momentum=_MOMENTUM)


def _progress_bar(desc: str) -> Any:
    from ignite.handlers import ProgressBar

    return ProgressBar(persist=False, desc=desc)


def _checkpoint(model: torch.nn.Module, optimizer: Any, trainer: Any, folder: Path) -> Any:
    from ignite.handlers import Checkpoint, DiskSaver, global_step_from_engine

    return Checkpoint(
        {"model": model, "optimizer": optimizer, "trainer": trainer},
        DiskSaver(folder, require_empty=False),
        n_saved=2,
        score_function=lambda evaluator: evaluator.state.metrics["accuracy"],
        score_name="accuracy",
        global_step_transform=global_step_from_engine(trainer),
    )


def _epoch_line(epoch: int, epochs: int, metrics: dict[str, float], seconds: float, samples: int) -> str:
    return (
        f"epoch {epoch}/{epochs}  val accuracy {metrics['accuracy']:.4f}  val loss {metrics['loss']:.4f}  "
        f"train {samples / seconds:,.0f} samples/s ({seconds:.2f} s)"
    )


@dataclass
class _Run:
    """One engine's training run, driven an epoch at a time (the engine interrupts itself after each epoch)."""

    name: str
    trainer: Any
    train: Iterable[Any]
    timer: _EpochTimer
    finish: Callable[[], tuple[float, float]]  # -> (accuracy, loss) on the validation set after the last epoch

    def run_epoch(self, epochs: int) -> None:
        self.trainer.run(self.train, max_epochs=epochs)  # resumes after the previous epoch's interrupt()

    def result(self, train_samples: int) -> RunResult:
        accuracy, loss = self.finish()
        return RunResult(self.name, accuracy, loss, self.timer.seconds, train_samples)


def _pause_after_each_epoch(trainer: Any) -> None:
    from ignite.engine import Events

    @trainer.on(Events.EPOCH_COMPLETED)
    def _pause(engine: Any) -> None:
        if engine.state.epoch < engine.state.max_epochs:
            engine.interrupt()


def _hotloop_run(data: _Data, config: DemoConfig, device: str, out: TextIO) -> tuple[_Run, Any]:
    """hotloop's trainer and evaluator, validating and checkpointing after every epoch; also returns the saver."""
    import ignite.metrics
    from ignite.engine import Events

    import hotloop
    from hotloop.metrics import Accuracy

    model, optimizer = _setup(data, config, device)
    loss_fn = torch.nn.CrossEntropyLoss()
    # no_sync keeps the loss on the device (no .item() per iteration); prefetch only acts on CUDA.
    hot: dict[str, Any] = {"compile": config.compile, "prefetch": device == "cuda"}
    trainer = hotloop.create_supervised_trainer(model, optimizer, loss_fn, device=device, no_sync=True, **hot)
    metrics = {"accuracy": Accuracy(device=device), "loss": ignite.metrics.Loss(loss_fn, device=device)}
    evaluator = hotloop.create_supervised_evaluator(model, metrics=metrics, device=device, **hot)
    timer = _EpochTimer(device)
    timer.attach(trainer)  # first on EPOCH_COMPLETED: the epoch's time excludes the validation below
    _progress_bar("hotloop").attach(trainer)
    saver = _checkpoint(model, optimizer, trainer, config.output / "checkpoints")
    evaluator.add_event_handler(Events.COMPLETED, saver)
    val = data.make_val()

    @trainer.on(Events.EPOCH_COMPLETED)
    def _validate(engine: Any) -> None:
        evaluator.run(val)
        line = _epoch_line(
            engine.state.epoch, config.epochs, evaluator.state.metrics, timer.seconds[-1], data.num_train
        )
        print(line, file=out, flush=True)

    _pause_after_each_epoch(trainer)

    def finish() -> tuple[float, float]:
        return evaluator.state.metrics["accuracy"], evaluator.state.metrics["loss"]

    return _Run("hotloop", trainer, data.make_train(), timer, finish), saver


def _ignite_run(data: _Data, config: DemoConfig, device: str) -> _Run:
    """Ignite's stock trainer on a fresh copy of the model (same weights and data order), validated at the end."""
    import ignite.engine
    import ignite.metrics

    model, optimizer = _setup(data, config, device)
    loss_fn = torch.nn.CrossEntropyLoss()
    trainer = ignite.engine.create_supervised_trainer(model, optimizer, loss_fn, device=device)
    timer = _EpochTimer(device)
    timer.attach(trainer)
    _progress_bar("ignite ").attach(trainer)  # the same per-iteration cost as the hotloop run's bar
    _pause_after_each_epoch(trainer)

    def finish() -> tuple[float, float]:
        metrics = {"accuracy": ignite.metrics.Accuracy(), "loss": ignite.metrics.Loss(loss_fn)}
        evaluator = ignite.engine.create_supervised_evaluator(model, metrics=metrics, device=device)
        evaluator.run(data.make_val())
        return evaluator.state.metrics["accuracy"], evaluator.state.metrics["loss"]

    return _Run("ignite", trainer, data.make_train(), timer, finish)


def _saved_files(saver: Any, folder: Path) -> list[Path]:
    return [folder / filename for _, filename in saver.state_dict()["_saved"]]


def _timed_epochs(epochs: int) -> str:
    return {1: "the only epoch", 2: "epoch 2"}.get(epochs, f"epochs 2–{epochs}")


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def epoch_ratios(hot: RunResult, ign: RunResult) -> list[float]:
    """hotloop's samples/s ÷ Ignite's, epoch by epoch (the two ran alternately), after the first epoch if there are
    more (the first pays for warm-up and compiling).

    Args:
        hot: The hotloop run.
        ign: The Ignite run, of as many epochs on the same data.

    Returns:
        One ratio per timed epoch; above 1 where hotloop was faster.

    Examples:
        >>> hot = RunResult("hotloop", epoch_seconds=[9.0, 1.0, 2.0])
        >>> epoch_ratios(hot, RunResult("ignite", epoch_seconds=[9.0, 2.0, 2.0]))
        [2.0, 1.0]
    """
    pairs = list(zip(hot.epoch_seconds, ign.epoch_seconds))
    timed = pairs[1:] or pairs
    return [ignite / hotloop for hotloop, ignite in timed if hotloop > 0]


def speed_verdict(ratios: Sequence[float]) -> str:
    """The comparison line: the median of the per-epoch ratios, their range, and what the range allows one to say.

    Args:
        ratios: hotloop ÷ Ignite samples/s per timed epoch (:func:`epoch_ratios`).

    Returns:
        E.g. ``"1.04× (median of 4 per-epoch ratios, range 0.81–1.38×): equal within noise"``.

    Examples:
        >>> speed_verdict([0.9, 1.1, 1.3])
        '1.10× (median of 3 per-epoch ratios, range 0.90–1.30×): equal within noise'
    """
    if not ratios:
        return "n/a (no timed epoch)"
    median = statistics.median(ratios)
    if len(ratios) == 1:
        return f"{median:.2f}× (one timed epoch: no spread to judge the noise by; run 3 or more epochs)"
    low, high = min(ratios), max(ratios)
    summary = f"{median:.2f}× (median of {len(ratios)} per-epoch ratios, range {low:.2f}–{high:.2f}×)"
    if low <= 1.0 <= high:
        return f"{summary}: equal within noise"
    return f"{summary}: hotloop {'faster' if low > 1.0 else 'slower'} in every timed epoch"


def _report_lines(report: DemoReport, config: DemoConfig) -> list[str]:
    hot, ign = report.hotloop, report.ignite
    accuracy = f"hotloop {hot.accuracy:.4f} (val loss {hot.loss:.4f})"
    speed = f"hotloop {hot.samples_per_second:,.0f}"
    if ign is not None:
        accuracy += f"   Ignite {ign.accuracy:.4f} (val loss {ign.loss:.4f})"
        speed += f"   Ignite {ign.samples_per_second:,.0f}"
    speed += f" (training, median of {_timed_epochs(config.epochs)})"
    step = "compiled" if config.compile else "eager"
    lines = [
        "",
        "hotloop demo report",
        f"  data:        {report.data_description}",
        f"  device:      {report.device}, {step} hotloop step, {_plural(config.epochs, 'epoch')}, "
        f"batch {config.batch_size}, seed {config.seed}",
        f"  accuracy:    {accuracy}",
        f"  samples/s:   {speed}",
    ]
    if ign is not None:
        lines.append(f"  hotloop ÷ Ignite: {speed_verdict(epoch_ratios(hot, ign))}")
    lines.append("  checkpoints: " + (", ".join(str(path) for path in report.checkpoints) or "none"))
    return lines


def run_demo(config: DemoConfig, out: TextIO | None = None) -> DemoReport:
    """Runs the demo: hotloop's training with per-epoch validation, epochs alternating with Ignite's, and a report.

    Args:
        config: What to run.
        out: Where the per-epoch lines and the report go (default: ``sys.stdout``); progress bars go to stderr.

    Returns:
        The figures of both runs and the checkpoint files.

    Raises:
        ValueError: CUDA was asked for and is not there, or ``config.data`` is not an image folder.
        FileNotFoundError: ``config.data`` does not exist.
        ModuleNotFoundError: A package the run needs is missing (:func:`check_requirements`), before any work.

    Examples:
        .. code-block:: python

            from pathlib import Path

            from hotloop.demo import DemoConfig, run_demo

            report = run_demo(DemoConfig(epochs=3, output=Path("demo-out")))
            report.hotloop.accuracy  # about 0.95 after three epochs
    """
    if not isinstance(config, DemoConfig):
        raise TypeError(f"run_demo expects a DemoConfig, got {type(config).__name__}")
    check_requirements(config)
    out = sys.stdout if out is None else out
    device = resolve_device(config.device)
    data = _make_data(config, device)
    print(f"hotloop demo: {data.description}; device {device}", file=out, flush=True)
    hot, saver = _hotloop_run(data, config, device, out)
    runs = [hot, _ignite_run(data, config, device)] if config.compare else [hot]
    # Epochs alternate between the engines (hotloop 1, Ignite 1, hotloop 2, ...) so that a busy machine slows both.
    for _ in range(config.epochs):
        for run in runs:
            run.run_epoch(config.epochs)
    results = [run.result(data.num_train) for run in runs]
    checkpoints = _saved_files(saver, config.output / "checkpoints")
    report = DemoReport(results[0], results[1] if config.compare else None, checkpoints, data.description, device)
    print("\n".join(_report_lines(report, config)), file=out, flush=True)
    return report


# -------------------------------------------------------------------------------------------------------- command line


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _existing_folder(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder" if path.exists() else f"{text!r} does not exist")
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the demo's options to ``parser`` (used by ``hotloop demo``).

    Args:
        parser: The (sub)command's parser.
    """
    defaults = DemoConfig()
    parser.add_argument(
        "--epochs",
        type=_positive_int,
        default=defaults.epochs,
        metavar="N",
        help=f"training epochs of each run (default: {defaults.epochs})",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=defaults.batch_size,
        metavar="N",
        help=f"samples per batch (default: {defaults.batch_size})",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default=defaults.device,
        help="where to train; auto: CUDA when available (default: auto)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile hotloop's steps with torch.compile (slower on CPU; the Ignite run stays eager)",
    )
    parser.add_argument(
        "--data",
        type=_existing_folder,
        metavar="DIR",
        help="an image folder with train/ and val/, each holding one sub-folder per class, "
        "instead of scikit-learn's digits",
    )
    parser.add_argument(
        "--image-size",
        type=_positive_int,
        default=defaults.image_size,
        metavar="N",
        help=f"with --data: resize images to N x N (default: {defaults.image_size})",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=defaults.output,
        metavar="DIR",
        help=f"folder for checkpoints (and the digits as files on the DALI path) (default: {defaults.output})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help="seed of the weights, split and data order, shared by both runs (default: 0)",
    )
    parser.add_argument(
        "--loader",
        choices=("auto", "dali", "memory"),
        default=defaults.loader,
        help="how the digits are fed: dali (written as PNG files, read by DALI), memory (tensors, torch DataLoader); "
        "auto: dali when DALI is installed, else memory (default: auto)",
    )
    parser.add_argument(
        "--no-compare", dest="compare", action="store_false", help="skip the comparison run on Ignite's stock trainer"
    )


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    """The :class:`DemoConfig` of parsed ``hotloop demo`` options.

    Args:
        args: What :func:`add_arguments`' parser returned.

    Returns:
        The demo's configuration.
    """
    return DemoConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        device=args.device,
        compile=args.compile,
        data=args.data,
        image_size=args.image_size,
        output=args.output,
        seed=args.seed,
        loader=args.loader,
        compare=args.compare,
    )
