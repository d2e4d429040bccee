"""Content hashes: prompt sets, JSON-able specs and weight files (sha256, hex digests)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flash_exp.files import write_text_atomic

_CHUNK = 1 << 20
MEMO_FILE = "file_sha256.json"


def sha256_text(text: str) -> str:
    """sha256 of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical_json(obj: Any) -> str:
    """``obj`` as JSON with sorted keys and no whitespace: equal content, equal string."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_json(obj: Any) -> str:
    """sha256 of :func:`canonical_json` of ``obj``."""
    return sha256_text(canonical_json(obj))


def prompt_set_hash(prompts: Sequence[str]) -> str:
    """sha256 of the ordered prompts joined by newlines (prompts hold no newline, see ``normalise_caption``)."""
    return sha256_text("\n".join(prompts))


def file_sha256(path: Path, memo_dir: Path | None = None) -> str:
    """sha256 of the bytes of ``path``.

    With ``memo_dir`` the digest is remembered in ``memo_dir/file_sha256.json`` under the resolved
    path, size and modification time, so a multi-gigabyte weights file is read once.
    """
    path = Path(path).resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    memo_path = memo_dir / MEMO_FILE if memo_dir is not None else None
    memo: dict[str, str] = {}
    if memo_path is not None and memo_path.is_file():
        memo = json.loads(memo_path.read_text())
        if key in memo:
            return memo[key]
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    value = digest.hexdigest()
    if memo_path is not None:
        memo[key] = value
        write_text_atomic(memo_path, json.dumps(memo, indent=1, sort_keys=True))
    return value


def directory_sha256(directory: Path, memo_dir: Path | None = None) -> str:
    """sha256 over the relative paths and :func:`file_sha256` digests of every file under ``directory``
    (hidden files and folders left out), e.g. a diffusers pipeline directory's weights and configs.
    With ``memo_dir`` an unchanged file (same size and modification time) is not read again."""
    directory = Path(directory)
    files = sorted(p for p in directory.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts))
    return sha256_json({p.relative_to(directory).as_posix(): file_sha256(p, memo_dir) for p in files})
