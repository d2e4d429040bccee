"""The LightningModule: manual optimisation of the method's distiller (``method=flash|lcm|dmd2``).

Flash, each data batch: one generator update, then one discriminator update that reuses the
generator step's detached student sample and teacher features (one teacher rollout per batch). Only
the distiller's first optimiser (the one it steps on every batch) goes through Lightning's step
counter, so ``trainer.global_step`` counts data batches and ``phases.iterations`` /
``trainer.max_steps`` are in data batches. ``cost/teacher_evals_per_batch`` logs the running mean of
the teacher's batch-B evaluations per data batch (a 2B CFG call counts 2), ``cost/wall_s`` the seconds
since this process started fitting.

Checkpoints hold only what trains (LoRA weights, discriminator head), the optimisers, the step, the
method's random generator state and the data position; frozen base weights are reloaded from
``backbone.pretrained``.
"""

from __future__ import annotations

import logging
import math
import time

import lightning as L
import torch

from flash_exp.backbones import build_backbone
from flash_exp.config import EIGHT_BIT_MISSING, TrainConfig
from flash_exp.method import build_distiller
from flash_exp.metrics.restoration import build_lpips
from flash_exp.tasks import build_task
from flash_exp.training.checkpoints import shape_mismatch
from flash_exp.training.sharding import clean_name, is_fsdp, shard

log = logging.getLogger(__name__)

DATA_COUNTS = ("skipped", "filtered", "shards_truncated", "shards_unreadable")  # carried by every batch
SHOWN = ("loss/generator", "phase", "data/skipped_samples", "data/skipped_files")  # on the progress bar too


class NonFiniteLossError(FloatingPointError):
    """A loss term went NaN or infinite: the run stops instead of training on it."""


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
        flash_lpips = cfg.method.name == "flash" and cfg.loss.distill.type == "lpips"
        lpips = build_lpips(cfg.loss.distill.lpips_weights) if flash_lpips else None
        self.distiller = build_distiller(self.backbone, cfg, lpips)
        if cfg.trainer.compile_teacher:
            self.backbone.compile_teacher()
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.data_counts: dict[int, dict[str, int]] = {}  # per stream: its cumulative DATA_COUNTS
        self.skipped_names: set[str] = set()  # the distinct skipped samples of every stream
        self.teacher_evals: list[float] = []  # per batch of this process, for the running mean logged
        # name -> shape of every trainable weight, as built (FSDP later holds them as flat shards)
        self.trainable_shapes = {n: tuple(p.shape) for n, p in self.named_parameters() if p.requires_grad}
        self.sharded = False  # configure_model has wrapped the denoiser in FSDP

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        o = self.cfg.trainer.optim
        opt_cls = adamw_class(o.eight_bit)
        optimizers = [opt_cls(params, lr=lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
                      for params, lr, _ in self.distiller.optimizer_groups(o)]
        return optimizers[0] if len(optimizers) == 1 else optimizers

    def setup(self, stage: str) -> None:
        self.generator.manual_seed(self.cfg.seed + 1000 * self.global_rank)

    def configure_model(self) -> None:
        """Under ``trainer.strategy=fsdp``: the denoiser and the discriminator head sharded
        (:func:`~flash_exp.training.sharding.shard`), and every rank's teacher rollout as long as the
        longest (each call of the sharded denoiser gathers its weights from all ranks)."""
        if not is_fsdp(self._trainer) or self.sharded:
            return
        shard(self, self.trainer.strategy.root_device)
        self.sharded = True
        if hasattr(self.distiller, "calls_across_ranks") and self.trainer.world_size > 1:
            self.distiller.calls_across_ranks = self._most_over_ranks

    def _most_over_ranks(self, count: int) -> int:
        """The largest ``count`` of any rank (one all-reduce)."""
        value = torch.tensor([count], device=self.trainer.strategy.root_device)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return int(value.item())

    def on_fit_start(self) -> None:
        """With ``trainer.offload_frozen`` on an accelerator, the frozen encoders go back to CPU memory."""
        self.fit_started = time.perf_counter()
        # under FSDP the module as a whole was never moved: the strategy's device, once attached
        device = self._trainer.strategy.root_device if self._trainer is not None else self.device
        if self.cfg.trainer.offload_frozen and device.type != "cpu":
            self.backbone.offload_frozen(device)

    def _update(self, index: int, loss: torch.Tensor, logs: dict[str, float]) -> None:
        """Back-propagate ``loss`` into optimiser ``index`` of the distiller and step it; a non-finite
        ``loss`` stops training before the update (``logs``: its terms, to name the one at fault)."""
        self.stop_if_non_finite(float(loss.detach()), logs, self.global_step)
        optimizers = self.optimizers()
        opt = optimizers[index] if isinstance(optimizers, list) else optimizers
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        clip = self.distiller.optimizer_groups(self.cfg.trainer.optim)[index][2]
        if clip and self.cfg.trainer.gradient_clip_val:
            self.clip_gradients(opt, gradient_clip_val=self.cfg.trainer.gradient_clip_val)
        if index == 0:
            opt.step()
        else:  # the raw optimiser: Lightning's step counter must count data batches, not updates
            opt.optimizer.step()

    def training_step(self, batch: dict, batch_idx: int) -> None:
        step = self.global_step
        prepared = self.task.prepare(batch, self.backbone)
        z, cond = prepared.latents, prepared.condition
        null = prepared.null_condition

        teacher_before = self.backbone.teacher_samples
        logs = self.distiller.train_step(z, cond, null, step, self.generator, self._update)
        self.teacher_evals.append((self.backbone.teacher_samples - teacher_before) / z.shape[0])
        logs["cost/teacher_evals_per_batch"] = sum(self.teacher_evals) / len(self.teacher_evals)
        logs["cost/wall_s"] = time.perf_counter() - self.fit_started

        self.data_counts[int(batch["stream"])] = {k: int(batch[k]) for k in DATA_COUNTS if k in batch}
        self.skipped_names.update(batch.get("skipped_new", []))
        logs.update({f"data/{k}": float(v) for k, v in self.data_totals().items()})
        self.log_dict({k: v for k, v in logs.items() if k not in SHOWN}, on_step=True, batch_size=z.shape[0])
        self.log_dict({k: logs[k] for k in SHOWN if k in logs}, prog_bar=True, on_step=True, batch_size=z.shape[0])
        if 0 < self.trainer.max_steps <= step + 1:  # the last step is logged whatever trainer.log_every says
            self.trainer.should_stop = True

    def stop_if_non_finite(self, total: float, logs: dict[str, float], step: int) -> None:
        """Raise :class:`NonFiniteLossError` before the update when the loss ``total`` is NaN or infinite,
        naming the step, the phase and the loss terms of ``logs`` that went non-finite; the last checkpoint
        stays the last good one (nothing is saved on an error). Under DDP every rank stops at the same
        update when any rank's loss is non-finite (one rank alone would leave the others waiting in the
        next gradient all-reduce)."""
        here = not math.isfinite(total)
        if not self._on_any_rank(here):
            return
        if here:
            terms = [k for k, v in logs.items() if k.startswith("loss/") and not math.isfinite(v)]
            named = ", ".join(f"{k}={logs[k]}" for k in terms) or f"the loss = {total}"
        else:
            named = f"on another rank (this rank's loss: {total})"
        phases = getattr(self.distiller, "phases", None)  # Flash's; LCM and DMD2 have no phases
        where = f", phase {phases.at(step).name!r} (index {phases.at(step).index}, K={phases.at(step).k})" \
            if phases is not None else f" ({self.cfg.method.name})"
        raise NonFiniteLossError(
            f"non-finite loss at step {step}{where}: {named}. "
            "Training stopped before this update; checkpoints/ holds the last good state")

    def _on_any_rank(self, decision: bool) -> bool:
        """``decision`` or'ed over the ranks of a multi-process run (one all-reduce); as is otherwise."""
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            return decision
        return bool(trainer.strategy.reduce_boolean_decision(decision, all=False))

    def data_totals(self) -> dict[str, int]:
        """The data counts of every stream added up. Sample level: ``skipped_samples`` (each time a sample
        was skipped: a bad file counts once per pass over the data), ``skipped_files`` (the distinct
        samples, files or shard entries, among them), ``filtered``; shard level: ``shards_truncated``,
        ``shards_unreadable``."""
        t = {k: sum(c.get(k, 0) for c in self.data_counts.values()) for k in DATA_COUNTS}
        return {"skipped_samples": t["skipped"], "skipped_files": len(self.skipped_names), "filtered": t["filtered"],
                "shards_truncated": t["shards_truncated"], "shards_unreadable": t["shards_unreadable"]}

    def data_summary(self) -> str:
        """The end-of-run line on what the data streams dropped."""
        t = self.data_totals()
        return (f"data: {t['skipped_samples']} samples skipped from {t['skipped_files']} distinct files, "
                f"{t['filtered']} filtered (data.min_aesthetic_score); "
                f"shards: {t['shards_truncated']} truncated, {t['shards_unreadable']} unreadable "
                f"({len(self.data_counts)} stream(s) on this rank)")

    # ------------------------------------------------------------------ checkpoints
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights training updates, by their names in the module (under FSDP: inside
        :func:`~flash_exp.training.sharding.full_parameters`, or they are this rank's shards)."""
        return {clean_name(n): p.detach() for n, p in self.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # the strategy's state dict of the module (FSDP's gathered on rank 0), trainable entries only
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in self.trainable_shapes}
        generator, global_rng = self.generator.get_state(), torch.get_rng_state()
        checkpoint["flash_rng"] = {"generator": generator, "torch": global_rng}
        if self._trainer is not None and self.trainer.world_size > 1:
            # every rank draws its own noise: a resume bit-exact on every rank needs each rank's state
            # (collective: every rank dumps the checkpoint, rank 0 writes it)
            checkpoint["flash_rng"]["per_rank"] = {"generator": self._from_every_rank(generator),
                                                   "torch": self._from_every_rank(global_rng)}
        checkpoint["flash_data"] = {"batches": self.global_step, "counts": dict(self.data_counts)}

    def _from_every_rank(self, state: torch.Tensor) -> torch.Tensor:
        """(world size, *state.shape): ``state`` of every rank, by rank, on the CPU."""
        gathered = self.trainer.strategy.all_gather(state.to(self.trainer.strategy.root_device))
        return gathered.cpu()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """This rank's random states as saved (rank 0's when the checkpoint has none for this rank: a
        single-process checkpoint, or another world size)."""
        rng = checkpoint.get("flash_rng")
        if rng is None:
            return
        per_rank = rng.get("per_rank")
        rank, world = self.global_rank, (self.trainer.world_size if self._trainer is not None else 1)
        if per_rank is not None and per_rank["generator"].shape[0] == world:
            rng = {"generator": per_rank["generator"][rank], "torch": per_rank["torch"][rank]}
        self.generator.set_state(rng["generator"].clone())
        torch.set_rng_state(rng["torch"].clone())

    def check_fits(self, state: dict[str, torch.Tensor]) -> None:
        """Raise ``ValueError`` naming the setting that differs unless a checkpoint's ``state`` holds
        exactly this config's trainable weights, with their shapes. Called before the fit loads the
        checkpoint (FSDP loads it into the sharded module before any hook sees it)."""
        got = {k: tuple(v.shape) for k, v in state.items()}
        differs = shape_mismatch(self.trainable_shapes, got)
        if differs is not None:
            raise ValueError(f"the checkpoint does not fit this config: {differs} (resume with the run's own "
                             "settings, or start afresh with trainer.resume=never in another run directory)")
