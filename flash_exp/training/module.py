"""The LightningModule: manual optimisation of the student (generator) and the discriminator head.

Each data batch: one generator update, then one discriminator update that reuses the generator
step's detached student sample and teacher features (one teacher rollout per batch). Only the
generator optimiser goes through Lightning's step counter, so ``trainer.global_step`` counts data
batches and ``phases.iterations`` / ``trainer.max_steps`` are in data batches.

Checkpoints hold only what trains (LoRA weights, discriminator head), the optimisers, the step, the
method's random generator state and the data position; frozen base weights are reloaded from
``backbone.pretrained``.
"""

from __future__ import annotations

import logging
import math

import lightning as L
import torch

from flash_exp.backbones import build_backbone
from flash_exp.config import EIGHT_BIT_MISSING, TrainConfig
from flash_exp.method.distiller import FlashDistiller
from flash_exp.tasks import build_task
from flash_exp.training.checkpoints import shape_mismatch

log = logging.getLogger(__name__)

DATA_COUNTS = ("skipped", "filtered", "shards_truncated", "shards_unreadable")  # carried by every batch


class NonFiniteLossError(FloatingPointError):
    """A loss term went NaN or infinite: the run stops instead of training on it."""


def build_lpips(weights: str | None) -> torch.nn.Module:
    """LPIPS (VGG16) from torchmetrics, with the VGG16 ImageNet weights read from a local file.

    ``weights`` defaults to torchvision's cache file ``<torch hub dir>/checkpoints/vgg16-397923af.pth``.
    """
    from pathlib import Path

    from torchmetrics.functional.image.lpips import _LPIPS

    path = Path(weights) if weights else Path(torch.hub.get_dir()) / "checkpoints" / "vgg16-397923af.pth"
    if not path.is_file():
        raise FileNotFoundError(
            f"LPIPS needs the torchvision VGG16 ImageNet weights at {path} (no network here). Copy "
            "vgg16-397923af.pth there, or pass loss.distill.lpips_weights=<file>, or use "
            "loss.distill.type=l2."
        )
    lpips = _LPIPS(pretrained=True, net="vgg", pnet_rand=True)
    state = torch.load(path, map_location="cpu", weights_only=True)
    slices = {}
    for name, child in lpips.net.named_children():
        for index, _ in child.named_children():
            slices[index] = name
    mapped = {}
    for key, value in state.items():
        if key.startswith("features."):
            index, param = key.split(".")[1], key.split(".", 2)[2]
            mapped[f"{slices[index]}.{index}.{param}"] = value
    missing, _ = lpips.net.load_state_dict(mapped, strict=False)
    if missing:
        raise ValueError(f"{path} is not a torchvision VGG16 state dict (missing {missing[:3]})")
    lpips.requires_grad_(False)
    return lpips.eval()


def adamw_class(eight_bit: bool) -> type[torch.optim.Optimizer]:
    """torch's AdamW, or bitsandbytes' AdamW8bit (8-bit optimiser states) for ``trainer.optim.eight_bit``."""
    if not eight_bit:
        return torch.optim.AdamW
    try:
        import bitsandbytes as bnb
    except ImportError as err:
        raise ImportError(f"trainer.optim.eight_bit=true {EIGHT_BIT_MISSING}") from err
    return bnb.optim.AdamW8bit


class FlashModule(L.LightningModule):
    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.automatic_optimization = False
        self.strict_loading = False  # checkpoints carry only the trainable state
        self.cfg = cfg
        self.backbone = build_backbone(cfg.backbone)
        self.task = build_task(cfg.task)
        lpips = build_lpips(cfg.loss.distill.lpips_weights) if cfg.loss.distill.type == "lpips" else None
        self.distiller = FlashDistiller(self.backbone, cfg, lpips)
        if cfg.trainer.compile_teacher:
            self.backbone.compile_teacher()
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.data_counts: dict[int, dict[str, int]] = {}  # per stream: its cumulative DATA_COUNTS

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        o = self.cfg.trainer.optim
        opt_cls = adamw_class(o.eight_bit)
        student = opt_cls(self.backbone.trainable_parameters(), lr=o.lr, betas=tuple(o.betas),
                          weight_decay=o.weight_decay)
        if self.distiller.discriminator is None:
            return student
        disc = opt_cls(self.distiller.discriminator.parameters(), lr=o.lr_discriminator,
                       betas=tuple(o.betas), weight_decay=o.weight_decay)
        return [student, disc]

    def setup(self, stage: str) -> None:
        self.generator.manual_seed(self.cfg.seed + 1000 * self.global_rank)

    def on_fit_start(self) -> None:
        """With ``trainer.offload_frozen`` on an accelerator, the frozen encoders go back to CPU memory."""
        if self.cfg.trainer.offload_frozen and self.device.type != "cpu":
            self.backbone.offload_frozen(self.device)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        optimizers = self.optimizers()
        opt_g, opt_d = optimizers if isinstance(optimizers, list) else (optimizers, None)
        step = self.global_step
        prepared = self.task.prepare(batch, self.backbone)
        z, cond = prepared.latents, prepared.condition
        null = prepared.null_condition

        loss, logs, disc_inputs = self.distiller.generator_loss(z, cond, null, step, self.generator)
        self.stop_if_non_finite(logs, "loss/generator", step)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.cfg.trainer.gradient_clip_val:
            self.clip_gradients(opt_g, gradient_clip_val=self.cfg.trainer.gradient_clip_val)
        opt_g.step()

        phase = self.distiller.phases.at(step)
        train_disc = phase.adversarial_weight > 0 or self.cfg.loss.adversarial.train_in_warmup
        if opt_d is not None and disc_inputs is not None and train_disc:
            d_loss, d_logs = self.distiller.discriminator_loss(disc_inputs)
            self.stop_if_non_finite(d_logs, "loss/discriminator", step)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            # the raw optimiser: Lightning's step counter must count data batches, not updates
            opt_d.optimizer.step()
            self.distiller.clip_discriminator()
            logs.update(d_logs)

        self.data_counts[int(batch["stream"])] = {k: int(batch[k]) for k in DATA_COUNTS if k in batch}
        logs.update({f"data/{k}": float(v) for k, v in self.data_totals().items()})
        shown = {"loss/generator", "phase"}
        self.log_dict({k: v for k, v in logs.items() if k not in shown}, on_step=True, batch_size=z.shape[0])
        self.log_dict({k: logs[k] for k in shown}, prog_bar=True, on_step=True, batch_size=z.shape[0])

    def stop_if_non_finite(self, logs: dict[str, float], total: str, step: int) -> None:
        """Raise :class:`NonFiniteLossError` before the update when ``logs[total]`` is NaN or infinite,
        naming the step, the phase and the loss terms that went non-finite; the last checkpoint stays
        the last good one (nothing is saved on an error)."""
        if math.isfinite(logs[total]):
            return
        terms = [k for k, v in logs.items() if k.startswith("loss/") and k != total and not math.isfinite(v)]
        phase = self.distiller.phases.at(step)
        named = ", ".join(f"{k}={logs[k]}" for k in terms or [total])
        raise NonFiniteLossError(
            f"non-finite loss at step {step}, phase {phase.name!r} (index {phase.index}, K={phase.k}): {named}. "
            "Training stopped before this update; checkpoints/ holds the last good state")

    def data_totals(self) -> dict[str, int]:
        """The data counts of every stream added up (sample level: skipped, filtered; shard level:
        shards_truncated, shards_unreadable)."""
        return {k: sum(c.get(k, 0) for c in self.data_counts.values()) for k in DATA_COUNTS}

    def data_summary(self) -> str:
        """The end-of-run line on what the data streams dropped."""
        t = self.data_totals()
        return (f"data: {t['skipped']} samples skipped, {t['filtered']} filtered (data.min_aesthetic_score); "
                f"shards: {t['shards_truncated']} truncated, {t['shards_unreadable']} unreadable "
                f"({len(self.data_counts)} stream(s) on this rank)")

    # ------------------------------------------------------------------ checkpoints
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in names}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = self.trainable_state_dict()
        checkpoint["flash_rng"] = {"generator": self.generator.get_state(), "torch": torch.get_rng_state()}
        checkpoint["flash_data"] = {"batches": self.global_step, "counts": dict(self.data_counts)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        rng = checkpoint.get("flash_rng")
        if rng is not None:
            self.generator.set_state(rng["generator"])
            torch.set_rng_state(rng["torch"])
        expected = {k: tuple(v.shape) for k, v in self.trainable_state_dict().items()}
        got = {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items()}
        differs = shape_mismatch(expected, got)
        if differs is not None:
            raise ValueError(f"the checkpoint does not fit this config: {differs} (resume with the run's own "
                             "settings, or start afresh with trainer.resume=never in another run directory)")
