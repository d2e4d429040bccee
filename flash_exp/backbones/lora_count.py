"""``python -m flash_exp.backbones.lora_count``: LoRA parameter counts of the full-size UNets.

The UNets are built from their shipped configs (``architectures/*.json``, copied from the hub
repositories' ``unet/config.json``) on the meta device: no weights, no download, a second of CPU.
The LoRA is the student's (``peft.LoraConfig`` on ``to_q, to_k, to_v, to_out.0``, rank per the
paper: SD1.5 128, SDXL 64), attached with diffusers' ``add_adapter`` as in training.

    $ python -m flash_exp.backbones.lora_count
    sd15  rank 128  25,509,888 LoRA parameters (25.5M), 102.0 MB in fp32 ...
    sdxl  rank  64  92,897,280 LoRA parameters (92.9M), 371.6 MB in fp32 ...

The cards and paper say 26.4M (SD1.5) and 108M (SDXL); the code's LoRA gives 25.5M and 92.9M, which
match the published fp32 files (102 MB, 372 MB); see paper-facts §1c and §6.8.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

ARCHITECTURES = Path(__file__).parent / "architectures"
TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass(frozen=True)
class Model:
    name: str
    config_file: str
    rank: int  # the paper's rank (paper-facts §5)


MODELS = {
    "sd15": Model("sd15", "sd15_unet.json", 128),
    "sdxl": Model("sdxl", "sdxl_unet.json", 64),
}


def unet_config(name: str) -> dict:
    return json.loads((ARCHITECTURES / MODELS[name].config_file).read_text())


def lora_parameter_count(config: dict, rank: int, targets: tuple[str, ...] = TARGETS) -> tuple[int, int]:
    """(LoRA parameters, adapted modules) of a ``UNet2DConditionModel`` built from ``config`` on meta."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(config)
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                    target_modules=list(targets)))
    params = sum(p.numel() for n, p in unet.named_parameters() if ".lora_" in n)
    from flash_exp.backbones.common import lora_layers

    return params, len(lora_layers(unet))


def millions(n: int) -> str:
    return f"{n / 1e6:.1f}M"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", metavar="MODEL", help=f"any of {', '.join(MODELS)} (default: all)")
    parser.add_argument("--rank", type=int, default=None, help="override the paper's rank")
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    for name in args.models or list(MODELS):
        rank = args.rank or MODELS[name].rank
        params, modules = lora_parameter_count(unet_config(name), rank)
        print(f"{name:5s} rank {rank:3d}  {params:,} LoRA parameters ({millions(params)}), "
              f"{params * 4 / 1e6:.1f} MB in fp32, {modules} adapted modules ({', '.join(TARGETS)})")


if __name__ == "__main__":
    main()
