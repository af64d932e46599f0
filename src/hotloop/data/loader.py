"""An iterator adapter over DALI's own ``DALIGenericIterator`` that gives exact epochs to hotloop's engines.

DALI's iterator is wrapped, not rewritten: it builds the pipelines, counts samples against the reader (``reader_name``)
and trims the padded last batch (``LastBatchPolicy.PARTIAL``). The adapter adds what an ``Engine`` expects of a data
loader: ``iter(loader)`` starts a new epoch every time (resetting DALI's iterator, or finishing the epoch first when
the previous one was left part-way), ``len(loader)`` is the number of batches of every epoch, batches are dicts with
the user's keys (or tuples), and errors raised inside DALI name the adapter and keep DALI's message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from hotloop.data.pipelines import require_dali

__all__ = ["DALILoader"]

_POLICIES = ("partial", "drop")


def _check_args(output_map: Any, reader_name: Any, last_batch: Any, postprocess: Any) -> tuple[str, ...]:
    if isinstance(output_map, str) or not isinstance(output_map, Sequence) or not output_map:
        raise TypeError(
            f"output_map should be a non-empty sequence of str (one per pipeline output), got {output_map!r}"
        )
    if not all(isinstance(k, str) for k in output_map) or len(set(output_map)) != len(output_map):
        raise ValueError(f"output_map should hold distinct str names, got {output_map!r}")
    if not isinstance(reader_name, str) or not reader_name:
        raise TypeError(
            "reader_name should be the name of the pipeline's reader (fn.readers.*(..., name=...)); exact epochs "
            f"need it, got {reader_name!r}"
        )
    if last_batch not in _POLICIES:
        raise ValueError(f"last_batch should be one of {_POLICIES}, got {last_batch!r}")
    if postprocess is not None and not callable(postprocess):
        raise TypeError(f"postprocess should be None or a callable taking the batch dict, got {postprocess!r}")
    return tuple(output_map)


def _check_padded(pipelines: list[Any], reader_name: str) -> None:
    for pipe in pipelines:
        pipe.build()
        try:
            meta = pipe.reader_meta(reader_name)
        except RuntimeError as e:
            raise ValueError(f"reader_name={reader_name!r} names no reader of the pipeline: {e}") from e
        if not meta["pad_last_batch"]:
            raise ValueError(
                f"the reader {reader_name!r} was built without pad_last_batch=True: its last batch would wrap into the "
                "next epoch's samples and shift every later epoch; build it with pad_last_batch=True"
            )


class DALILoader:
    """Epochs of batches from DALI pipelines, through ``nvidia.dali.plugin.pytorch.DALIGenericIterator``.

    Every ``iter(loader)`` is one epoch of exactly the reader's shard: with ``last_batch="partial"`` (the default)
    the last batch holds only the samples that are left (DALI's ``LastBatchPolicy.PARTIAL`` over a reader built with
    ``pad_last_batch=True``), so no sample is dropped or repeated; with ``"drop"`` an incomplete last batch is left
    out. ``len(loader)`` is the same every epoch and on every shard: shards of uneven size keep step (collective ops
    in a distributed step need it), so with ``"partial"`` a shorter shard may end on a batch of zero samples.

    DALI resets its iterator only at the end of an epoch. When a new epoch is asked for while the previous one was
    left part-way (``engine.terminate_epoch()``, an exception, a loop that broke off), the adapter first reads and
    discards the rest of that epoch, which costs the time of reading it.

    Output buffers: DALI's iterator either copies each output into a new torch tensor (static executor) or hands out
    a tensor that owns a reference to DALI's buffer through DLPack (``exec_dynamic=True``, the default of DALI 2), so
    a batch stays valid after the next one is produced, and holding on to it is safe. Tensors are on the GPU when the
    pipeline's outputs are.

    Resuming: :meth:`state_dict` / :meth:`load_state_dict` save and restore the position inside an epoch through
    DALI's own pipeline checkpoints, so that a run resumed from an Ignite ``Checkpoint`` continues the same epoch
    with the same remaining samples (see ``docs/dali.md``).

    Args:
        pipelines: one pipeline (built or not), or a function making one (a ``@pipeline_def`` function with its
            arguments bound, called with no argument, or with ``checkpoint=`` by :meth:`load_state_dict`).
        output_map: a name for each pipeline output, in order; the keys of the batch dicts.
        reader_name: the ``name`` of the pipeline's reader (built with ``pad_last_batch=True``).
        last_batch: ``"partial"`` or ``"drop"``, as above.
        as_tuple: yield tuples in ``output_map`` order instead of dicts (what Ignite's default ``prepare_batch``
            expects for ``(x, y)``).
        postprocess: applied to each batch dict before it is handed out (e.g. label dtype changes), or ``None``.
        diagnose: called when the pipeline fails; what it returns (e.g. which input file is bad: DALI's decoders
            do not name it) is added to the error message.

    Raises:
        ModuleNotFoundError: DALI is not installed.
        TypeError: an argument has the wrong type.
        ValueError: ``reader_name`` names no reader, or the reader does not pad its last batch.

    Examples:
        .. code-block:: python

            from nvidia.dali import fn, pipeline_def, types

            @pipeline_def(batch_size=32, num_threads=2, device_id=None)
            def pipe():
                jpegs, labels = fn.readers.file(file_root="data/", name="Reader", pad_last_batch=True)
                images = fn.decoders.image(jpegs, output_type=types.GRAY)
                return fn.crop_mirror_normalize(fn.resize(images, size=(28, 28)), output_layout="CHW"), labels

            loader = DALILoader(pipe(), ["image", "label"], reader_name="Reader")
            trainer.run(loader, max_epochs=3)   # each epoch reads every file exactly once
    """

    def __init__(
        self,
        pipelines: Any,
        output_map: Sequence[str] = ("image", "label"),
        *,
        reader_name: str = "Reader",
        last_batch: str = "partial",
        as_tuple: bool = False,
        postprocess: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        diagnose: Callable[[], str | None] | None = None,
    ) -> None:
        dali = require_dali("DALILoader")
        self.output_map = _check_args(output_map, reader_name, last_batch, postprocess)
        self.reader_name = reader_name
        self.last_batch = last_batch
        self.as_tuple = bool(as_tuple)
        self.postprocess = postprocess
        self.diagnose = diagnose
        self._make: Callable[..., Any] | None = None
        if callable(pipelines) and not isinstance(pipelines, dali.Pipeline):
            self._make = pipelines
            pipelines = self._guard(pipelines)
        self._iterator = self._build(pipelines)
        self._len = len(self._iterator)
        self._served = 0  # batches handed out in the current epoch
        self._ended = False  # DALI's iterator raised StopIteration and waits for reset()
        self._resumed = False  # load_state_dict() restored a position inside an epoch
        self.epoch = 0  # epochs started through iter()

    def _build(self, pipelines: Any) -> Any:
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        pipes = list(pipelines) if isinstance(pipelines, (list, tuple)) else [pipelines]
        if len(pipes) != 1:
            raise ValueError(
                f"DALILoader takes one pipeline (one process per device, as ignite.distributed runs), got {len(pipes)}"
            )
        _check_padded(pipes, self.reader_name)
        policy = LastBatchPolicy.PARTIAL if self.last_batch == "partial" else LastBatchPolicy.DROP
        keys, name = list(self.output_map), self.reader_name
        return self._guard(lambda: DALIGenericIterator(pipes, keys, reader_name=name, last_batch_policy=policy))

    def state_dict(self) -> dict[str, Any]:
        """The position in the data stream: DALI's pipeline checkpoint, the epoch and the batches served in it.

        Save it with the engine (``Checkpoint({"trainer": trainer, "loader": loader}, ...)``) to resume inside an
        epoch exactly where the run stopped: same order, same remaining samples. Needs a loader made from a pipeline
        *function* whose pipelines are built with ``enable_checkpointing=True`` (the factories' loaders are).

        Returns:
            ``{"checkpoint": bytes | str, "epoch": int, "served": int, "ended": bool}``.

        Raises:
            ValueError: the pipeline was not built with ``enable_checkpointing=True``.
        """
        try:
            checkpoint = self._iterator.checkpoints()[0]
        except ValueError as e:
            raise ValueError(
                f"{type(self).__name__}.state_dict() needs a pipeline built with enable_checkpointing=True: {e}"
            ) from e
        return {"checkpoint": checkpoint, "epoch": self.epoch, "served": self._served, "ended": self._ended}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Rebuilds the pipeline from a :meth:`state_dict`: the next ``iter()`` continues the saved epoch.

        Args:
            state_dict: what :meth:`state_dict` returned (from this loader or one made the same way).

        Raises:
            TypeError: the loader was made from a pipeline object, which DALI cannot rebuild from a checkpoint; pass
                the pipeline function instead.
            KeyError: ``state_dict`` lacks a key.
        """
        if self._make is None:
            raise TypeError(
                f"{type(self).__name__}.load_state_dict() rebuilds the pipeline from its checkpoint, so the loader "
                "must be made from a pipeline function (called as fn(checkpoint=...)), not from a pipeline object"
            )
        checkpoint = state_dict["checkpoint"]
        make = self._make
        self._iterator = self._build(self._guard(lambda: make(checkpoint=checkpoint)))
        self.epoch, self._served, self._ended = state_dict["epoch"], state_dict["served"], state_dict["ended"]
        self._resumed = 0 < self._served < self._len and not self._ended

    @property
    def batch_size(self) -> int:
        """Samples per full batch of one pipeline."""
        return int(self._iterator.batch_size)

    def __len__(self) -> int:
        return self._len

    def _guard(self, call: Callable[[], Any]) -> Any:
        """Runs ``call``; a DALI error becomes a RuntimeError that names the loader and keeps DALI's message."""
        try:
            return call()
        except RuntimeError as e:
            raise self._error(e) from e

    def _error(self, error: RuntimeError) -> RuntimeError:
        found = self.diagnose() if self.diagnose is not None else None
        hint = f"\n{found}" if found else ""
        return RuntimeError(f"DALI pipeline of {type(self).__name__} failed: {error}{hint}")

    def _finish_epoch(self) -> None:
        """Brings DALI's iterator to the start of a new epoch: it only resets at the end of one."""
        if not self._ended and self._served:
            for _ in range(self._len - self._served):
                self._guard(lambda: next(self._iterator))
            self._ended = True
        if self._ended:
            self._iterator.reset()
        self._served = 0
        self._ended = False

    def __iter__(self) -> Iterator[Any]:
        if self._resumed:  # the saved epoch goes on where it stopped
            self._resumed = False
        else:
            self._finish_epoch()
            self.epoch += 1
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        it, post, keys, as_tuple = self._iterator, self.postprocess, self.output_map, self.as_tuple
        while True:
            try:
                outputs = next(it)
            except StopIteration:
                self._ended = True
                return
            except RuntimeError as e:
                raise self._error(e) from e
            self._served += 1
            batch = outputs[0]  # DALI gives one dict per pipeline
            if post is not None:
                batch = post(batch)
            yield tuple(batch[k] for k in keys) if as_tuple else batch

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(output_map={self.output_map}, reader_name={self.reader_name!r}, "
            f"batch_size={self.batch_size}, len={self._len}, last_batch={self.last_batch!r})"
        )
