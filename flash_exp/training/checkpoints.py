"""Reading checkpoint files safely: tensors and plain values only, corrupt files named.

Every checkpoint a user can hand over (a run directory's ``checkpoints/*.ckpt``) is read with
``torch.load(weights_only=True)``: a pickled payload is refused instead of run. Lightning's own
checkpoints (``state_dict``, optimiser states, loops, callback states, this project's ``flash_rng`` and
``flash_data``) hold only tensors and plain Python values, so they load unchanged.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and why."""


class UnsafeCheckpointError(CheckpointError):
    """The file pickles objects other than tensors and plain values: it is not unpickled."""


class CorruptCheckpointError(CheckpointError):
    """The file is empty, truncated or not a checkpoint at all."""


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """The checkpoint at ``path`` on the CPU, read with ``weights_only=True``.

    Raises :class:`UnsafeCheckpointError` for a file carrying other pickled objects and
    :class:`CorruptCheckpointError` for an empty, truncated or foreign file."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"{path} holds pickled objects other than tensors and plain values; it was not loaded "
            f"(weights_only=True): {unpickling_reason(err)}") from None
    except (EOFError, RuntimeError, OSError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise CorruptCheckpointError(f"{path} is corrupt or truncated ({describe_error(err, path)})") from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise CorruptCheckpointError(f"{path} is not a training checkpoint (no state_dict)")
    return state


def unpickling_reason(err: pickle.UnpicklingError) -> str:
    """The line of torch's weights-only refusal that names the refused object."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return (named or lines or [type(err).__name__])[0]


def describe_error(err: BaseException, path: Path) -> str:
    """``<type>: <message>``, saying the file is empty when a bare ``EOFError`` says nothing."""
    if isinstance(err, EOFError) and path.is_file() and path.stat().st_size == 0:
        return "an empty file"
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
