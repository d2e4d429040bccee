"""One quiet console for training: every upstream message that a user cannot act on is filtered here,
each with the reason it is harmless, and Lightning's lines are printed once (through the handlers the
entry point configured) instead of twice."""

from __future__ import annotations

import logging
import warnings

# (regular expression of the warning's message, why it is harmless here)
HARMLESS_WARNINGS = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated",
     "Lightning's own use of a torch API that torch deprecated; nothing in our code or config"),
    (r"Found \d+ module\(s\) in eval mode",
     "the frozen teacher, VAE and text encoders are in eval mode on purpose; only the LoRA and the "
     "discriminator train"),
    (r"Using ModelCheckpoint with manual optimization and every_n_train_steps",
     "a checkpoint at step N must hold the weights after N updates (what resuming at step N needs), "
     "which is what Lightning saves; its 12-line advice is for the opposite wish"),
    (r"Checkpoint directory .* exists and is not empty",
     "a resumed or requeued run writes into its own checkpoints/ again, which is what resuming means"),
    (r"While injecting the PEFT adapters, an inconsistency was discovered",
     "diffusers lists every LoRA target module in the adapter config, PEFT compares that list with the "
     "state dict's keys; the weights load in full (tests/test_train.py checks the exported student "
     "reproduces the trained one)"),
    (r"The `srun` command is available on your system but is not used",
     "Lightning sees SLURM's srun on the PATH of a local run; a SLURM run goes through "
     "hydra/launcher=slurm, which starts every rank with srun itself"),
    (r"`torch_dtype` is deprecated",
     "our backbone loaders pass torch_dtype, the keyword every diffusers release pyproject.toml allows "
     "(>= 0.35) accepts; the dtype is applied either way"),
)

# (start of a log message, why it is harmless here)
HARMLESS_LOG_LINES = (
    ("💡 Tip:", "an advertisement for a hosted tracker; the trackers are chosen with logger=..."),
    ("`weights_only` was not set", "our own checkpoints are read back; the default (False) is what we need"),
    ("No LoRA keys associated to CLIPText", "the Flash LoRA adapts the denoiser only, never the text encoders"),
)
# loggers whose handlers get the filter: the root (Hydra's console) and the libraries' own handlers
FILTERED_HANDLERS_OF = ("", "diffusers", "transformers")

LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")


# packages whose INFO lines are dropped: open_clip narrates each step of building the scoring CLIP
# ("Parsing model identifier", "Instantiating model architecture", ... ten lines per load) on the root
# logger, where no logger level can single it out
CHATTY_PACKAGES = ("open_clip",)


class _DropHarmless(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.INFO and any(f"/{p}/" in record.pathname for p in CHATTY_PACKAGES):
            return False
        message = str(record.msg)
        return not any(message.startswith(prefix) for prefix, _ in HARMLESS_LOG_LINES)


def quiet_console() -> None:
    """Install the filters above; hand Lightning's records to the root handlers only. Idempotent."""
    for pattern, _why in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in LIGHTNING_LOGGERS:  # Lightning adds its own stderr handler: the second copy of each line
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    # the libraries' loading bars (one per pipeline component or weight file): each done in a blink
    # here, they interleave with our own lines; sampling and training keep their bars
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    for name in FILTERED_HANDLERS_OF:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _DropHarmless) for f in handler.filters):
                handler.addFilter(_DropHarmless())
