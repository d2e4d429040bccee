"""``python -m flash_exp.train``: compose, validate, build, fit, export.

    python -m flash_exp.train                                  # the toy world on this machine
    python -m flash_exp.train backbone=sdxl trainer=gpu        # the paper's SDXL settings
    python -m flash_exp.train -m +experiment=fig5_losses hydra/launcher=slurm
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from flash_exp.config import ConfigError, TrainConfig, register_configs, register_resolvers, validate

log = logging.getLogger("flash_exp.train")


def run_directory() -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path.cwd()


def train(cfg: TrainConfig, run_dir: Path) -> Path:
    """Fit the student described by ``cfg`` in ``run_dir``; returns the export directory."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from flash_exp.export import export_student, latest_grid
    from flash_exp.training.datamodule import FlashDataModule
    from flash_exp.training.module import FlashModule
    from flash_exp.training.samples import SampleGridCallback

    saved = run_dir / ".hydra" / "config.yaml"  # Hydra writes it for CLI runs; in-process runs need it too
    if not saved.is_file():
        saved.parent.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.structured(cfg), saved)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    t = cfg.trainer
    max_steps = t.max_steps or sum(cfg.phases.iterations)
    ckpt_dir = run_dir / "checkpoints"
    module = FlashModule(cfg)
    prompts = list(cfg.data.prompts)[: t.num_sample_prompts] or ["a photo of a cat"]
    loggers = [CSVLogger(run_dir, name="", version="")]
    try:
        loggers.append(TensorBoardLogger(run_dir, name="tensorboard", version=""))
    except ModuleNotFoundError:
        pass
    if t.wandb:
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(WandbLogger(save_dir=run_dir, name=cfg.run_name, id=run_dir.name, resume="allow"))
    trainer = L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        max_steps=max_steps,
        max_epochs=-1,
        logger=loggers,
        log_every_n_steps=t.log_every,
        enable_model_summary=False,
        callbacks=[
            ModelCheckpoint(dirpath=ckpt_dir, filename="step_{step:06d}", auto_insert_metric_name=False,
                            every_n_train_steps=t.checkpoint_every, save_top_k=-1, save_last=True),
            SampleGridCallback(run_dir / "samples", prompts, list(t.sample_nfe), t.sample_every, cfg.seed),
            TQDMProgressBar(refresh_rate=max(1, t.log_every)),
        ],
    )
    last = ckpt_dir / "last.ckpt"
    ckpt_path = str(last) if t.resume == "auto" and last.is_file() else None
    if ckpt_path:
        log.info("resuming from %s", ckpt_path)
    trainer.fit(module, datamodule=FlashDataModule(cfg), ckpt_path=ckpt_path)
    trainer.save_checkpoint(last)
    export_dir = run_dir / "export"
    if trainer.is_global_zero:
        export_student(module.backbone, cfg, export_dir, latest_grid(run_dir))
        log.info("exported the student to %s", export_dir)
    return export_dir


register_configs()
register_resolvers()


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from flash_exp.backbones.hub import TeacherNotFoundError, resolve_pretrained

    try:
        typed = validate(cfg)
        # the teacher's weights before torch and diffusers load: without network this fails in seconds
        resolve_pretrained(typed.backbone.pretrained, typed.backbone.revision, typed.backbone.variant)
    except (ConfigError, TeacherNotFoundError, NotADirectoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    run_dir = run_directory()
    train(typed, run_dir)
    print(f"run directory: {run_dir}")


if __name__ == "__main__":
    main()
