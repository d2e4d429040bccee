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
    (r"Checkpoint directory .* exists and is not empty",
     "a resumed or requeued run writes into its own checkpoints/ again, which is what resuming means"),
)

# (start of a log message, why it is harmless here)
HARMLESS_LOG_LINES = (
    ("💡 Tip:", "an advertisement for a hosted tracker; the trackers are chosen with logger=..."),
    ("`weights_only` was not set", "our own checkpoints are read back; the default (False) is what we need"),
)

LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")


class _DropHarmless(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
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
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _DropHarmless) for f in handler.filters):
            handler.addFilter(_DropHarmless())
    # transformers' per-file "Loading weights" bar: one bar per text encoder, done in a blink
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
