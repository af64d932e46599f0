"""Resuming from the newest checkpoint that is whole: :func:`resume_from_latest` and :class:`RNGState`.

Ignite's ``DiskSaver(atomic=True)`` (the default) serializes a checkpoint into a temporary file in the same
directory and renames it over the final name, so a process killed while writing leaves an orphan ``tmp*`` file
(no ``.pt`` extension) and never a truncated ``*.pt``. A file can still be damaged afterwards (a full disk,
``atomic=False``, a copy cut short, a power loss before the page cache reached the disk: ``DiskSaver`` does not
``fsync``); :func:`resume_from_latest` therefore verifies each candidate before loading it.

In a process group of several ranks (``torchrun``, SLURM), ``DiskSaver`` writes on rank 0 only, and
:func:`resume_from_latest` is a collective: rank 0 chooses the checkpoint, every rank loads that one.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import re
import warnings
import zipfile
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, cast

import ignite.distributed as idist
import torch
from ignite.handlers import Checkpoint

__all__ = ["RNGState", "find_checkpoints", "resume_from_latest"]

_logger = logging.getLogger(__name__)

# The global step that Ignite's ``Checkpoint`` puts in a file name: ``{prefix}_{name}_{step}[_{score}].{ext}``.
_STEP = re.compile(r"_(\d+)(?:_[^_]*)?$")

# What a damaged file raises from ``torch.load``: a cut zip archive (RuntimeError "PytorchStreamReader failed"),
# a cut legacy pickle (EOFError, UnpicklingError), garbage (UnpicklingError, zipfile.BadZipFile, ValueError).
_LOAD_ERRORS = (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError)


def _numpy_rng_globals() -> list[Any]:
    """What ``np.random.get_state()`` pickles: Ignite's ``DeterministicEngine.state_dict()`` saves it."""
    try:
        import numpy as np
    except ModuleNotFoundError:  # pragma: no cover - numpy ships with torch's usual installs
        return []
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed np.core to np._core
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _load_context(weights_only: bool) -> AbstractContextManager:
    if not weights_only:
        return nullcontext()
    # Allow-listing only numpy's array reconstruction keeps ``weights_only`` safe: it builds plain arrays.
    return torch.serialization.safe_globals(_numpy_rng_globals())


def _step_of(path: Path) -> int:
    match = _STEP.search(path.stem)
    return int(match.group(1)) if match else -1


def find_checkpoints(dirname: str | os.PathLike, filename_prefix: str = "", ext: str = "pt") -> list[Path]:
    """The checkpoint files of a directory, newest first.

    Newest is the latest modification time, ties broken by the global step in the file name
    (``{filename_prefix}_{name}_{step}.{ext}`` as written by Ignite's ``Checkpoint``).

    Args:
        dirname: the directory given to ``DiskSaver``.
        filename_prefix: only files whose name starts with it (Ignite's ``Checkpoint(filename_prefix=...)``).
        ext: the file extension, without the dot.

    Returns:
        The paths, newest first; an empty list if there are none.

    Raises:
        FileNotFoundError: if ``dirname`` does not exist.
        NotADirectoryError: if ``dirname`` is a file.
    """
    root = Path(dirname)
    if not root.exists():
        raise FileNotFoundError(f"Checkpoint directory {str(root)!r} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"Checkpoint directory {str(root)!r} is not a directory")
    suffix = f".{ext}"
    files = [
        p for p in root.iterdir() if p.is_file() and p.name.endswith(suffix) and p.name.startswith(filename_prefix)
    ]
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, _step_of(p), p.name), reverse=True)


def _try_load(path: Path, to_load: Mapping, weights_only: bool) -> tuple[Any, str | None]:
    """Load ``path``; return ``(checkpoint, None)`` or ``(None, why it cannot be used)``."""
    try:
        with _load_context(weights_only):
            obj = torch.load(path, map_location="cpu", weights_only=weights_only)
    except _LOAD_ERRORS as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return None, f"cannot be read ({type(exc).__name__}: {first_line[:200]})"
    if len(to_load) == 1:  # Ignite's load_objects: a single object may be saved as its bare state_dict
        return obj, None
    if not isinstance(obj, Mapping):
        return None, f"holds a {type(obj).__name__}, not a mapping of objects to load"
    missing = sorted(set(to_load) - set(obj))
    if missing:
        return None, f"lacks the keys {missing} of to_load (it has {sorted(obj)})"
    return obj, None


def resume_from_latest(
    dirname: str | os.PathLike,
    to_load: Mapping[str, Any],
    *,
    filename_prefix: str = "",
    ext: str = "pt",
    missing_ok: bool = False,
    weights_only: bool = True,
    **kwargs: Any,
) -> Path | None:
    """Load the newest valid checkpoint of a directory into ``to_load``.

    Candidates (see :func:`find_checkpoints`) are tried newest first. One that ``torch.load`` cannot read or that
    lacks a key of ``to_load`` is skipped with a warning naming it; the first valid one is loaded with Ignite's
    :meth:`~ignite.handlers.Checkpoint.load_objects`. Errors of ``load_state_dict`` itself (a checkpoint of another
    model) are raised, not skipped: they mean ``to_load`` is wrong, not the file.

    In a process group of several ranks this is a collective that every rank calls: rank 0 alone looks at the
    directory, skips what is damaged (the warnings are rank 0's) and broadcasts its choice; every rank then reads
    that same file, and only when all of them could read it does any rank load it. So the ranks resume from one and
    the same checkpoint, or all raise the same error. Every rank needs the directory at the same path (one node, or
    a shared file system), as Ignite's ``DiskSaver`` on rank 0 and the other ranks' reads imply.

    Args:
        dirname: the directory given to ``DiskSaver`` (or ``ModelCheckpoint``).
        to_load: the same mapping of names to objects as was given to ``Checkpoint`` as ``to_save``.
        filename_prefix: only files whose name starts with it; use it when the directory also holds other
            checkpoints (a ``best_`` model, another run).
        ext: the file extension, without the dot.
        missing_ok: if True, a missing directory or one without candidates returns None (start from scratch)
            instead of raising ``FileNotFoundError``. Candidates that are all invalid always raise.
        weights_only: passed to ``torch.load``. The numpy random state that ``DeterministicEngine.state_dict()``
            holds is allowed with ``weights_only=True`` (Ignite's own ``load_objects`` rejects it).
        kwargs: passed to ``Checkpoint.load_objects`` (e.g. ``strict=False``).

    Returns:
        The path loaded, or None when ``missing_ok`` and there was nothing to load.

    Raises:
        TypeError: if ``to_load`` is not a non-empty mapping of objects with ``load_state_dict``.
        FileNotFoundError: if the directory does not exist or holds no candidate (unless ``missing_ok``).
        NotADirectoryError: if ``dirname`` is a file.
        RuntimeError: if there are candidates and none of them is valid (the message lists each and why); in a
            process group, also if a rank cannot read the checkpoint that rank 0 chose.

    Examples:
        .. code-block:: python

            to_save = {"model": model, "optimizer": optimizer, "trainer": trainer}
            trainer.add_event_handler(Events.ITERATION_COMPLETED(every=100),
                                      Checkpoint(to_save, DiskSaver("ckpt", require_empty=False)))
            resume_from_latest("ckpt", to_save, missing_ok=True)   # no-op on the first start
            trainer.run(loader, max_epochs=10)
    """
    _check_to_load(to_load)
    choose = _Chooser(dirname, to_load, filename_prefix, ext, missing_ok, weights_only)
    path, obj = choose() if idist.get_world_size() == 1 else _agree_on(choose)
    if path is None:
        return None
    Checkpoint.load_objects(to_load=to_load, checkpoint=obj, **kwargs)
    _logger.info("hotloop: resumed from %s", path)
    return path


class _Chooser:
    """Finds the newest valid checkpoint: ``()`` returns ``(path, loaded checkpoint)``, or ``(None, None)``."""

    def __init__(
        self, dirname: str | os.PathLike, to_load: Mapping, prefix: str, ext: str, missing_ok: bool, weights_only: bool
    ) -> None:
        self.dirname, self.to_load, self.prefix, self.ext = dirname, to_load, prefix, ext
        self.missing_ok, self.weights_only = missing_ok, weights_only

    def __call__(self) -> tuple[Path | None, Any]:
        candidates = self._candidates()
        rejected = []
        for path in candidates:
            obj, why = _try_load(path, self.to_load, self.weights_only)
            if why is None:
                return path, obj
            # stacklevel 3: the line that called resume_from_latest (in one process)
            warnings.warn(f"hotloop: skipping checkpoint {str(path)!r}: it {why}", RuntimeWarning, stacklevel=3)
            rejected.append(f"  {path.name}: {why}")
        if not candidates:
            return None, None
        raise RuntimeError(
            f"No valid checkpoint in {str(self.dirname)!r}; every candidate was rejected:\n" + "\n".join(rejected)
        )

    def _candidates(self) -> list[Path]:
        try:
            candidates = find_checkpoints(self.dirname, self.prefix, self.ext)
        except FileNotFoundError:
            if self.missing_ok:
                return []
            raise
        if not candidates and not self.missing_ok:
            raise FileNotFoundError(
                f"No checkpoint '{self.prefix}*.{self.ext}' in {str(self.dirname)!r}; "
                "pass missing_ok=True to start from scratch when there is none"
            )
        return candidates


# What rank 0 raises while choosing, rebuilt on the other ranks from its name and message (others as RuntimeError).
_SHARED_ERRORS: dict[str, type[Exception]] = {
    error.__name__: error for error in (FileNotFoundError, NotADirectoryError, RuntimeError)
}


def _agree_on(choose: _Chooser) -> tuple[Path | None, Any]:
    """Rank 0 chooses and broadcasts; every rank reads the chosen file; all load it or all raise."""
    path, obj, decision = None, None, ""
    if idist.get_rank() == 0:
        try:
            path, obj = choose()
            decision = json.dumps({"path": None if path is None else str(path)})
        except Exception as exc:  # every rank raises it: none may wait in the broadcast for a decision never sent
            decision = json.dumps({"error": type(exc).__name__, "message": str(exc)})
            idist.broadcast(decision, src=0, safe_mode=True)
            raise
    chosen = json.loads(cast(str, idist.broadcast(decision, src=0, safe_mode=True)))
    if "error" in chosen:
        name, message = chosen["error"], chosen["message"]
        error = _SHARED_ERRORS.get(name, RuntimeError)
        raise error(f"{'' if name in _SHARED_ERRORS else name + ': '}{message} (on rank 0, which chose for every rank)")
    if chosen["path"] is None:
        return None, None
    if obj is None:
        obj, why = _try_load(Path(chosen["path"]), choose.to_load, choose.weights_only)
    else:
        why = None
    _check_all_can_load(chosen["path"], why)
    return Path(chosen["path"]), obj


def _check_all_can_load(path: str, why: str | None) -> None:
    reasons = cast(list[str], idist.all_gather("" if why is None else why))  # one string per rank
    failed = {rank: reason for rank, reason in enumerate(reasons) if reason}
    if failed:
        listed = "; ".join(f"rank {rank}: it {reason}" for rank, reason in failed.items())
        raise RuntimeError(
            f"resume_from_latest: rank 0 chose {path!r}, but not every rank can load it ({listed}). Every rank "
            "reads the checkpoint rank 0 chose: the directory must be at the same path on every node (a shared "
            "file system), and no rank resumes unless all can"
        )


def _check_to_load(to_load: Any) -> None:
    if not isinstance(to_load, Mapping) or not to_load:
        raise TypeError(f"to_load should be a non-empty mapping of names to objects, got {to_load!r}")
    for name, obj in to_load.items():
        if not callable(getattr(obj, "load_state_dict", None)):
            raise TypeError(f"to_load[{name!r}] ({type(obj).__name__}) has no load_state_dict method")


class RNGState:
    """The global random states (Python, numpy, torch CPU and CUDA) as a checkpointable object.

    Put it in Ignite's ``to_save`` next to the model, optimizer and trainer: a resumed run then draws the same
    random numbers (dropout masks, ``DataLoader`` shuffles) as an uninterrupted one. Its ``state_dict`` holds only
    tensors, strings and numbers, so it loads with ``torch.load(weights_only=True)``.

    Examples:
        .. code-block:: python

            to_save = {"model": model, "optimizer": optimizer, "trainer": trainer, "rng": RNGState()}
    """

    def state_dict(self) -> dict[str, Any]:
        """The current global random states.

        Returns:
            A dict with ``python``, ``torch``, ``cuda`` and (if numpy is installed) ``numpy`` entries.
        """
        state: dict[str, Any] = {
            "python": _python_state_to_tensor(random.getstate()),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        numpy_state = _numpy_state()
        if numpy_state is not None:
            state["numpy"] = numpy_state
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Set the global random states.

        Args:
            state_dict: what :meth:`state_dict` returned.

        Raises:
            KeyError: if ``python`` or ``torch`` is missing.
        """
        for key in ("python", "torch"):
            if key not in state_dict:
                raise KeyError(f"RNGState.load_state_dict: required key {key!r} missing (got {sorted(state_dict)})")
        random.setstate(_python_state_from_tensor(state_dict["python"]))
        torch.set_rng_state(state_dict["torch"].cpu())
        if state_dict.get("cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        if "numpy" in state_dict:
            _set_numpy_state(state_dict["numpy"])


def _python_state_to_tensor(state: tuple) -> dict[str, Any]:
    version, internal, gauss = state
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def _python_state_from_tensor(state: Mapping[str, Any]) -> tuple:
    return state["version"], tuple(int(v) for v in state["internal"].tolist()), state["gauss"]


def _numpy_state() -> dict[str, Any] | None:
    try:
        import numpy as np
    except ModuleNotFoundError:  # pragma: no cover
        return None
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)  # type: ignore[misc]
    assert isinstance(keys, np.ndarray)
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "gauss": (has_gauss, gauss)}


def _set_numpy_state(state: Mapping[str, Any]) -> None:
    import numpy as np

    has_gauss, gauss = state["gauss"]
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["kind"], keys, state["pos"], has_gauss, gauss))
