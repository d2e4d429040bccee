"""LoRA files: the modules a file holds, and the check that a load attached every one of them.

diffusers and PEFT drop LoRA weights they cannot place with a warning at most (diffusers decides
from a state dict's first key whether to convert it, so a file that mixes key forms loads in part).
Every LoRA load of the project therefore ends with :func:`check_lora_attached`, which counts the
adapter layers the load attached and the LoRA modules in the file and raises, naming both counts,
unless they agree.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from torch import nn

LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE
PEFT_FILE = "adapter_model.safetensors"  # PeftModel.save_pretrained
RECIPE_FILE = "recipe.json"  # beside an export: records the student's module count (``lora.modules``)

# one down-projection per module, in every key form a loader reads: PEFT ``lora_A`` (optionally with
# the adapter name), diffusers' ``lora.down`` / ``lora_linear_layer.down`` and its old attention-processor
# ``to_q_lora.down``, kohya's ``lora_down``; LoKr modules by their first factor ``lokr_w1`` / ``lokr_w1_a``
_DOWN_KEY = re.compile(r"^(?P<module>.+?)(?:\.lora_A(?:\.[\w-]+)?\.weight|\.lora\.down\.weight|_lora\.down\.weight"
                       r"|\.lora_linear_layer\.down\.weight|\.lora_down\.weight|\.lokr_w1(?:_a)?)$")


class LoraLoadError(ValueError):
    """A LoRA load attached fewer or more modules than its file holds, or the file lacks modules."""


def lora_weights_file(source: str | Path, weight_name: str | None = None) -> Path:
    """The safetensors file a loader reads for ``source``: the file itself, ``weight_name`` in the
    directory, the diffusers or PEFT file name, or the directory's only ``.safetensors`` file (as
    diffusers guesses). A hub id resolves through the local hub cache (where the load just put it)."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for name in [weight_name] if weight_name else [LORA_FILE, PEFT_FILE]:
            if (path / name).is_file():
                return path / name
        files = sorted(path.glob("*.safetensors"))
        if len(files) == 1 and not weight_name:
            return files[0]
        raise FileNotFoundError(f"{path}: no LoRA file {weight_name or LORA_FILE} among {[p.name for p in files]}")
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(str(source), weight_name or LORA_FILE))


def lora_file_modules(path: Path) -> set[str]:
    """The modules with LoRA weights in the safetensors file ``path`` (keys as written, prefix kept)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
    return {m.group("module") for m in map(_DOWN_KEY.match, keys) if m}


def attached_lora_modules(models: Iterable[nn.Module], adapter_name: str) -> int:
    """How many PEFT adapter layers (``BaseTunerLayer``) inside ``models`` hold ``adapter_name``."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(
        1 for model in models for m in model.modules()
        if isinstance(m, BaseTunerLayer) and any(adapter_name in getattr(m, n) for n in m.adapter_layer_names)
    )


def pipeline_modules(pipe) -> list[nn.Module]:
    """The ``nn.Module`` components of a diffusers pipeline (denoiser, text encoders, VAE, ...)."""
    return [c for c in pipe.components.values() if isinstance(c, nn.Module)]


def recorded_module_count(export_dir: Path) -> int | None:
    """The student's LoRA module count recorded in an export's ``recipe.json`` (None: not an export)."""
    path = Path(export_dir) / RECIPE_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("lora", {}).get("modules")


def check_lora_attached(models: Iterable[nn.Module], adapter_name: str, path: Path,
                        expected: int | None = None) -> int:
    """Raise :class:`LoraLoadError` naming both counts unless the load of the LoRA file ``path`` as
    ``adapter_name`` attached exactly the modules the file holds, and (when ``expected`` is given,
    e.g. the count an export recorded) the file holds ``expected`` modules. Returns the count."""
    in_file = len(lora_file_modules(path))
    attached = attached_lora_modules(models, adapter_name)
    if in_file == 0:
        raise LoraLoadError(f"{path} holds no LoRA weights (no lora_A / lora.down / lora_down keys)")
    if attached < in_file:
        raise LoraLoadError(f"{path}: LoRA attached to {attached} of the file's {in_file} modules "
                            f"({in_file - attached} dropped: their key names do not match this model)")
    if attached > in_file:
        raise LoraLoadError(f"{path}: LoRA attached to {attached} modules but the file holds {in_file} "
                            f"({attached - in_file} attached without weights)")
    if expected is not None and in_file != expected:
        raise LoraLoadError(
            f"{path} holds {in_file} LoRA modules but the student has {expected} ({RECIPE_FILE}): "
            "the file is incomplete; export the run again (python -m flash_exp.export run_dir=<run>)"
        )
    return attached


__all__ = ["LORA_FILE", "PEFT_FILE", "RECIPE_FILE", "LoraLoadError", "attached_lora_modules",
           "check_lora_attached", "lora_file_modules", "lora_weights_file", "pipeline_modules",
           "recorded_module_count"]
