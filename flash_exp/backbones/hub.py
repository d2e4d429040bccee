"""Where a teacher's weights come from: a local diffusers pipeline directory or a Hugging Face hub id.

This module imports nothing heavy (no torch, no diffusers) so that ``python -m flash_exp.train`` can
check the weights source right after validating the config and fail within seconds without network.
"""

from __future__ import annotations

import os
from pathlib import Path

HUB_TIMEOUT_S = 5.0  # connecting to the hub; without network the look-up fails quickly


class TeacherNotFoundError(FileNotFoundError):
    """The teacher is neither a local directory, nor in the local hub cache, nor downloadable."""


class HubUnreachableError(ConnectionError):
    """``HF_HUB_OFFLINE`` is set, or the hub's endpoint does not answer within a few seconds."""


def _offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE", "")
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


# hub repositories behind a licence click (the SD3 family's are named by family in prefetch); FLUX.1-schnell is open
GATED_REPOS = ("black-forest-labs/FLUX.1-dev",)


def gated_note(name: str) -> str:
    """What a gated teacher needs before any download: its licence accepted, then a logged-in hub client."""
    return (f"{name} is gated: accept its licence on https://huggingface.co/{name} (logged in to the hub) and run "
            "`hf auth login` on this machine before fetching")


def _not_found(name: str, reason: str) -> TeacherNotFoundError:
    gated = f" {gated_note(name)}." if name in GATED_REPOS else ""
    return TeacherNotFoundError(
        f"could not load the teacher {name!r} from the Hugging Face hub ({reason}). Without network access, "
        f"download it on a machine that has it (e.g. `hf download {name} --local-dir DIR`, or "
        f"`DiffusionPipeline.download({name!r})`), copy DIR here and pass backbone.pretrained=DIR "
        f"(a diffusers pipeline directory holding model_index.json).{gated}"
    )


def require_hub(action: str) -> None:
    """Raise :class:`HubUnreachableError` at once when ``action`` (e.g. "push to the hub") cannot reach
    the hub: ``HF_HUB_OFFLINE`` is set, or its endpoint refuses or ignores a connection for a few seconds."""
    import socket
    from urllib.parse import urlparse

    if _offline():
        raise HubUnreachableError(f"cannot {action}: HF_HUB_OFFLINE is set (unset it on a machine with network)")
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=HUB_TIMEOUT_S).close()
    except OSError as err:
        raise HubUnreachableError(f"cannot {action}: {constants.ENDPOINT} is unreachable ({err})") from err


def resolve_pretrained(name_or_path: str, revision: str | None = None, variant: str | None = None) -> str:
    """A local directory for ``name_or_path``: the directory itself, the local hub cache, or a download.

    A download fetches only what the pipeline needs (``DiffusionPipeline.download``: the components of
    ``model_index.json`` in the requested ``variant``), not every file of the repository. With
    ``HF_HUB_OFFLINE=1``, or when the hub cannot be reached within a few seconds, raises
    :class:`TeacherNotFoundError` naming the hub id and how to point at a local directory.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise NotADirectoryError(f"backbone.pretrained={name_or_path!r} exists but is not a directory")
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise TeacherNotFoundError(
            f"backbone.pretrained={name_or_path!r} is neither an existing directory nor a hub id (owner/name)"
        )
    from huggingface_hub import snapshot_download

    try:  # already in the local hub cache: no network needed
        cached = snapshot_download(name_or_path, revision=revision, local_files_only=True)
        if (Path(cached) / "model_index.json").is_file():
            return cached
    except Exception:
        pass
    if _offline():
        raise _not_found(name_or_path, "HF_HUB_OFFLINE is set and it is not in the local hub cache")
    from huggingface_hub import model_info

    try:  # a cheap reachability check with a short timeout before importing diffusers
        model_info(name_or_path, revision=revision, timeout=HUB_TIMEOUT_S)
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else ""
        raise _not_found(name_or_path, f"{type(err).__name__}: {first}") from err
    from diffusers import DiffusionPipeline

    try:
        return str(DiffusionPipeline.download(name_or_path, revision=revision, variant=variant))
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else ""
        raise _not_found(name_or_path, f"{type(err).__name__}: {first}") from err


__all__ = ["HubUnreachableError", "TeacherNotFoundError", "require_hub", "resolve_pretrained"]
