"""T2I-Adapter tasks (``adapter_canny``): a frozen diffusers ``T2IAdapter`` conditioned on an edge map.

Data pipeline: the Canny edge map of the image (:mod:`flash_exp.tasks.canny`), found at
``task.canny.detect_resolution`` (the paper's 384) and resized to the image.

Condition: the adapter's residuals, scaled by ``task.adapter.conditioning_scale`` (0.8, the paper),
go to the UNet as ``down_intrablock_additional_residuals`` (what ``StableDiffusionAdapterPipeline``
and ``StableDiffusionXLAdapterPipeline`` pass), for teacher and student alike and for both CFG
branches. The adapter is frozen: it is never trained nor checkpointed.
"""

from __future__ import annotations

import torch

from flash_exp.backbones.base import Backbone
from flash_exp.backbones.condition import Condition
from flash_exp.config import CannyConfig, TaskConfig
from flash_exp.tasks.base import SampleTransform, Task
from flash_exp.tasks.canny import edge_map


class CannyTransform(SampleTransform):
    def __init__(self, cfg: CannyConfig):
        self.cfg = cfg

    def __call__(self, item: dict, generator: torch.Generator) -> dict:
        c = self.cfg
        item["edges"] = edge_map(item["pixels"], c.low_threshold, c.high_threshold, c.blur_sigma, c.detect_resolution)
        return item


def load_adapter(name: str, subfolder: str | None = None):
    """A diffusers ``T2IAdapter`` from a local directory or a hub id (cache first; clear error offline)."""
    from pathlib import Path

    from diffusers import T2IAdapter

    from flash_exp.backbones.hub import TeacherNotFoundError

    kw = {"subfolder": subfolder} if subfolder else {}
    if Path(name).expanduser().is_dir():
        return T2IAdapter.from_pretrained(str(Path(name).expanduser()), **kw)
    try:
        return T2IAdapter.from_pretrained(name, **kw)
    except Exception as err:  # noqa: BLE001 (hub and file errors of many types)
        raise TeacherNotFoundError(
            f"could not load the T2I-Adapter {name!r} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). "
            f"Without network access, download it elsewhere (`hf download {name} --local-dir DIR`), copy DIR "
            f"here and pass task.adapter.pretrained=DIR."
        ) from err


class AdapterTask(Task):
    name = "adapter_canny"

    def __init__(self, cfg: TaskConfig):
        super().__init__(cfg)
        self.adapter = load_adapter(cfg.adapter.pretrained, cfg.adapter.subfolder)
        self.adapter.requires_grad_(False)
        self.adapter.eval()

    def train(self, mode: bool = True):  # the adapter stays in eval mode whatever Lightning asks
        super().train(mode)
        self.adapter.eval()
        return self

    @staticmethod
    def sample_transform(cfg: TaskConfig, resolution: int) -> SampleTransform:
        return CannyTransform(cfg.canny)

    @torch.no_grad()
    def residuals(self, edges: torch.Tensor) -> list[torch.Tensor]:
        """The adapter's per-block features of (B, 1, R, R) edge maps, times the conditioning scale."""
        x = edges.to(self.adapter.dtype)
        channels = self.adapter.config.in_channels
        if x.shape[1] != channels:
            x = x.expand(-1, channels, -1, -1)
        scale = self.cfg.adapter.conditioning_scale
        return [feature * scale for feature in self.adapter(x)]

    def add_condition(self, batch: dict, backbone: Backbone, latents: torch.Tensor, cond: Condition,
                      null: Condition) -> tuple[Condition, Condition]:
        residuals = self.residuals(batch["edges"].to(latents.device))
        return backbone.add_adapter_residuals(cond, residuals), backbone.add_adapter_residuals(null, residuals)

    def grid_inputs(self, batch: dict) -> list[tuple[str, torch.Tensor]]:
        return [("canny edges", batch["edges"].float().expand(-1, 3, -1, -1) * 2 - 1)]

    def ground_truth(self, batch: dict) -> torch.Tensor | None:
        return None

    def condition_metrics(self, images: torch.Tensor, batch: dict) -> dict[str, float]:
        """Edge agreement: F1 of the outputs' Canny edges against the condition (1 px tolerance)."""
        from flash_exp.metrics.restoration import edge_f1

        c = self.cfg.canny
        found = torch.stack([edge_map(img * 2 - 1, c.low_threshold, c.high_threshold, c.blur_sigma,
                                      c.detect_resolution) for img in images.float()])
        return {"edge_f1": edge_f1(found, batch["edges"].to(found))}


__all__ = ["AdapterTask", "CannyTransform", "load_adapter"]
