"""delira's ``AbstractNetworkTrainer``: callbacks, fold, state updates and validation-score comparison."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from typing import Any

from hotloop.compat.delira.callbacks import AbstractCallback, InvalidCallbackError
from hotloop.compat.delira.checks import _MODES

__all__ = ["AbstractNetworkTrainer"]


class AbstractNetworkTrainer:
    """delira's abstract API for network trainers: callbacks, fold, state updates and validation-score comparison.

    Subclasses implement ``_setup``, ``train``, ``predict``, ``save_state``, ``load_state``,
    ``_train_single_epoch`` and the ``_at_*`` hooks; here they raise ``NotImplementedError``.

    Args:
        fold: the current fold (an integer).
        callbacks: callbacks to register (see :meth:`register_callback`).

    Raises:
        TypeError: ``fold`` is not an integer, or ``callbacks`` is not an iterable.
        InvalidCallbackError: a callback is not one (a ``TypeError`` and an ``AssertionError``).
    """

    def __init__(self, fold: int = 0, callbacks: Iterable = ()) -> None:
        self._callbacks: list[Any] = []
        self.fold = fold
        self.start_epoch = 1
        self.stop_training = False
        if not isinstance(callbacks, Iterable):
            raise TypeError(f"callbacks should be a list of callbacks, got {callbacks!r}")
        for callback in callbacks:
            self.register_callback(callback)

    # -- abstract ----------------------------------------------------------------------------------------------------

    def _setup(self, *args: Any, **kwargs: Any) -> None:
        """Defines the actual trainer setup.

        Raises:
            NotImplementedError: if not overwritten by a subclass.
        """
        raise NotImplementedError()

    def _at_training_begin(self, *args: Any, **kwargs: Any) -> None:
        """Defines the behaviour at the beginning of the training.

        Raises:
            NotImplementedError: if not overwritten by a subclass.
        """
        raise NotImplementedError()

    def _at_training_end(self, *args: Any, **kwargs: Any) -> Any:
        """Defines the behaviour at the end of the training.

        Raises:
            NotImplementedError: if not overwritten by a subclass.
        """
        raise NotImplementedError()

    def _at_epoch_begin(self, *args: Any, **kwargs: Any) -> None:
        """Defines the behaviour at the beginning of each epoch.

        Raises:
            NotImplementedError: if not overwritten by a subclass.
        """
        raise NotImplementedError()

    def _at_epoch_end(self, *args: Any, **kwargs: Any) -> None:
        """Defines the behaviour at the end of each epoch.

        Raises:
            NotImplementedError: if not overwritten by a subclass.
        """
        raise NotImplementedError()

    def _train_single_epoch(self, batchgen: Any, epoch: int) -> None:
        """Defines a routine to train a single epoch.

        Raises:
            NotImplementedError: if not overwritten by a subclass.
        """
        raise NotImplementedError()

    def train(
        self,
        num_epochs: int,
        datamgr_train: Any,
        datamgr_valid: Any = None,
        val_score_key: str | None = None,
        val_score_mode: str = "highest",
    ) -> Any:
        """Defines a routine to train a specified number of epochs.

        Raises:
            NotImplementedError: if not overwritten by a subclass.
        """
        raise NotImplementedError()

    def predict(self, batchgen: Any, batchsize: int | None = None) -> Any:
        """Defines a routine to predict data obtained from a batch generator (``batchsize``: delira's spelling here).

        Raises:
            NotImplementedError: if not overwritten by a subclass.
        """
        raise NotImplementedError()

    def save_state(self, file_name: str, *args: Any, **kwargs: Any) -> None:
        """Saves the current state.

        Raises:
            NotImplementedError: if not overwritten by a subclass.
        """
        raise NotImplementedError()

    @staticmethod
    def load_state(file_name: str, *args: Any, **kwargs: Any) -> dict:
        """Loads a state from file.

        Raises:
            NotImplementedError: if not overwritten by a subclass.
        """
        raise NotImplementedError()

    # -- implemented -------------------------------------------------------------------------------------------------

    def update_state(self, file_name: str, *args: Any, **kwargs: Any) -> AbstractNetworkTrainer:
        """Update the internal state from a state loaded from ``file_name``.

        Args:
            file_name: the file containing the state.
            *args: passed to :meth:`load_state`.
            **kwargs: passed to :meth:`load_state`.

        Returns:
            the trainer, with its state modified.
        """
        return self._update_state(self.load_state(file_name, *args, **kwargs))

    def _update_state(self, new_state: Mapping[str, Any] | None) -> AbstractNetworkTrainer:
        """Set the trainer's attributes from ``new_state`` (keys of the form ``__name__`` are skipped).

        Args:
            new_state: attribute names and values; ``None`` (a callback that returned nothing) changes nothing.

        Returns:
            the trainer, with its state modified.

        Raises:
            TypeError: ``new_state`` is not a dict.
        """
        if new_state is None:
            return self
        if not isinstance(new_state, Mapping):
            raise TypeError(f"a new state should be a dict of attribute names and values, got {new_state!r}")
        for key, value in new_state.items():
            if not (key.startswith("__") and key.endswith("__")):
                setattr(self, key, value)
        return self

    @staticmethod
    def _is_better_val_scores(old_val_score: Any, new_val_score: Any, mode: str = "highest") -> Any:
        """Check whether the new validation score is better than the old one with respect to ``mode``.

        Args:
            old_val_score: old validation score.
            new_val_score: new validation score.
            mode: ``"highest"`` or ``"lowest"``: which score is optimal.

        Returns:
            True if the new score is better, False otherwise.

        Raises:
            ValueError: ``mode`` is not ``"highest"`` or ``"lowest"``.
        """
        if mode == "highest":
            return new_val_score > old_val_score  # a bool, or a 0-d bool tensor for tensor scores, as in delira
        if mode == "lowest":
            return new_val_score < old_val_score
        raise ValueError(f"Invalid Mode: {mode!r}. Mode must be in {list(_MODES)}")

    @property
    def fold(self) -> int:
        """The current fold.

        Raises:
            TypeError: on setting a value that is not an integer (or a string of one).
        """
        return self._fold

    @fold.setter
    def fold(self, fold: Any) -> None:
        if isinstance(fold, bool):
            raise TypeError(f"fold should be an integer, got {fold!r}")
        try:
            self._fold = operator.index(fold) if not isinstance(fold, str) else int(fold)
        except (TypeError, ValueError):
            raise TypeError(f"fold should be an integer, got {fold!r} ({type(fold).__name__})") from None

    def register_callback(self, callback: Any) -> None:
        """Register a callback.

        Args:
            callback: an :class:`AbstractCallback`, or any object with both ``at_epoch_begin`` and ``at_epoch_end``.

        Raises:
            InvalidCallbackError: ``callback`` is neither (a ``TypeError`` and an ``AssertionError``, which is what
                delira raised).
        """
        valid = isinstance(callback, AbstractCallback) or (
            callable(getattr(callback, "at_epoch_begin", None)) and callable(getattr(callback, "at_epoch_end", None))
        )
        if not valid:
            raise InvalidCallbackError(
                "Given callback is not valid; Must be instance of AbstractCallback or provide functions "
                f"'at_epoch_begin' and 'at_epoch_end', got {callback!r}"
            )
        self._callbacks.append(callback)
