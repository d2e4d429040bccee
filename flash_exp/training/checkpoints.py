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
    """``<type>: <message>``, or "an empty file" (torch's messages for those say nothing useful)."""
    if path.is_file() and path.stat().st_size == 0:
        return "an empty file"
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


# ---------------------------------------------------------------------------------------------- resume
def check_readable(path: Path) -> None:
    """Raise :class:`CheckpointError` unless ``path`` opens as a checkpoint (memory-mapped: the tensor
    bytes are not read, so this costs little even for large checkpoints)."""
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"{path} holds pickled objects other than tensors and plain values; it was not loaded "
            f"(weights_only=True): {unpickling_reason(err)}") from None
    except (EOFError, RuntimeError, OSError, ValueError) as err:
        raise CorruptCheckpointError(f"{path} is corrupt or truncated ({describe_error(err, path)})") from None


def checkpoint_step(path: Path | str) -> int:
    """The ``global_step`` a checkpoint was saved at (memory-mapped: the tensors are not read)."""
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("global_step", 0))


def resume_candidates(ckpt_dir: Path, last_name: str = "last.ckpt") -> list[Path]:
    """``last.ckpt``, then the periodic ``step_*.ckpt`` newest first: the order resume tries them in."""
    ckpt_dir = Path(ckpt_dir)
    last = [ckpt_dir / last_name] if (ckpt_dir / last_name).is_file() else []
    return last + sorted(ckpt_dir.glob("step_*.ckpt"), reverse=True)


def newest_intact(ckpt_dir: Path, last_name: str = "last.ckpt") -> tuple[Path | None, list[str]]:
    """The newest checkpoint of ``ckpt_dir`` that opens, and why each newer one was passed over.

    A corrupt file (empty, truncated) is skipped, named in the returned notes; a file carrying a
    pickled payload raises :class:`UnsafeCheckpointError` instead of being skipped silently."""
    notes: list[str] = []
    for path in resume_candidates(ckpt_dir, last_name):
        try:
            check_readable(path)
        except CorruptCheckpointError as err:
            notes.append(str(err))
            continue
        return path, notes
    return None, notes


def shape_mismatch(expected: dict[str, tuple[int, ...]], got: dict[str, tuple[int, ...]]) -> str | None:
    """Which setting differs between this config's trainable weights (``expected``: name -> shape) and a
    checkpoint's (``got``), in words; None when they fit."""
    lora = _lora_rank(expected), _lora_rank(got)
    if lora[0] is not None and lora[1] is not None and lora[0] != lora[1]:
        return f"backbone.lora.rank: the checkpoint has rank {lora[1]}, this config {lora[0]}"
    missing, unexpected = set(expected) - set(got), set(got) - set(expected)
    differing = sorted(k for k in set(expected) & set(got) if tuple(expected[k]) != tuple(got[k]))
    if any("lora_" in k for k in missing | unexpected):
        return (f"backbone.lora.targets (or backbone family): {len(missing)} LoRA weights missing, "
                f"{len(unexpected)} unexpected, e.g. {sorted(missing or unexpected)[0]}")
    if any("discriminator" in k for k in missing | unexpected):
        have = "has" if any("discriminator" in k for k in got) else "has no"
        return f"loss.adversarial.enabled: the checkpoint {have} discriminator head, this config differs"
    if any("discriminator" in k for k in differing):
        return ("backbone.discriminator (channels or feature_module): discriminator weight "
                f"{differing[0]} is {tuple(got[differing[0]])} in the checkpoint, {tuple(expected[differing[0]])} here")
    if missing or unexpected or differing:
        key = sorted(missing | unexpected)[0] if missing or unexpected else differing[0]
        return f"the trainable weights differ ({len(missing)} missing, {len(unexpected)} unexpected, " \
               f"{len(differing)} of another shape), e.g. {key}"
    return None


def _lora_rank(shapes: dict[str, tuple[int, ...]]) -> int | None:
    """The LoRA rank of a state dict's shapes: the first dimension of its first ``lora_A`` weight."""
    for key in sorted(shapes):
        if ".lora_A." in key and len(shapes[key]) >= 1:
            return int(shapes[key][0])
    return None
