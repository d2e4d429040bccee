"""Each rank's final step and the digest of its trainable state: under DDP every rank must hold the
same weights, so their digests must be equal."""

from __future__ import annotations

import hashlib
import json
import socket
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flash_exp.files import write_text_atomic
from flash_exp.training.slurm import slurm_task

RANKS_DIR = "ranks"  # <run_dir>/ranks/rank<k>.json: each rank's final step and trainable-state digest


def state_digest(state: dict[str, Any]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a state dict's tensors, in name order."""
    import torch

    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # a copy: numpy pins a tensor's storage, and FSDP frees its gathered weights after the digest
        h.update(t.flatten().view(torch.uint8).clone().numpy().tobytes())
    return h.hexdigest()


def write_rank_digest(run_dir: Path, trainer, module) -> Path:
    """``<run_dir>/ranks/rank<k>.json``: this rank's final step and the digest of its trainable state
    (LoRA + discriminator). Under DDP every rank must hold the same weights: equal digests."""
    state = module.trainable_state_dict()
    info = {"rank": trainer.global_rank, "world_size": trainer.world_size, "global_step": trainer.global_step,
            "sha256": state_digest(state), "tensors": len(state), "host": socket.gethostname(),
            "slurm": asdict(slurm_task()) if slurm_task() else None}
    path = Path(run_dir) / RANKS_DIR / f"rank{trainer.global_rank}.json"
    write_text_atomic(path, json.dumps(info, indent=2, sort_keys=True) + "\n")
    return path
