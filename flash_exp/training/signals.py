"""Checkpoint-then-requeue: a Lightning callback that saves ``checkpoints/last.ckpt`` when SLURM
announces the end of the job.

:class:`SignalCheckpoint` saves at the first step boundary after submitit's preemption signal (USR2,
sent ``signal_delay_s`` before the time limit) or SIGTERM (``scontrol requeue`` / preemption), then
lets submitit requeue the job; the requeued job runs again in the same sweep sub-directory and
``trainer.resume=auto`` continues there.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LAST_CKPT = "last.ckpt"


def _requeue_signal() -> int:
    """submitit's preemption/time-limit signal (USR2 unless ``SUBMITIT_PREEMPT_SIGNAL`` says otherwise)."""
    name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper().removeprefix("SIG")
    return int(getattr(signal, name, signal.SIGUSR2))


def _flush_loggers(trainer) -> None:
    """Write what the loggers buffer (CSVLogger keeps rows in memory between flushes), so the rows
    of the steps before a stop are on disk beside the checkpoint the resumed run continues from."""
    for logger in trainer.loggers:
        logger.save()


def _signal_checkpoint_callback_class():
    import torch
    from lightning.pytorch.callbacks import Checkpoint
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    class SignalCheckpoint(Checkpoint):
        """Checkpoint at the first step boundary after SLURM says the job must end, then requeue.

        - USR2 (submitit's signal, ``--signal=USR2@signal_delay_s`` before the time limit, or a
          preemption): the handler only sets a flag; at the end of the current step every rank agrees
          (an all-reduce), ``last.ckpt`` is written (atomically), and then submitit's own handler runs
          on rank 0: it pickles the Hydra launcher's ``checkpoint()`` (the same job, same sweep
          sub-directory), calls ``scontrol requeue`` (up to ``max_num_timeout`` times after a time
          limit; always after a preemption) and exits. Other ranks wait for SLURM to stop them.
        - SIGTERM (``scontrol requeue``, ``scancel``, preemption with a grace time): Lightning's handler
          sets ``trainer.received_sigterm`` and stops at the next step; ``last.ckpt`` is written first.
          A Ctrl-C noted by the run's ``StopSignals`` (or a signal on another rank) stops the same way.

        Nothing is saved inside a signal handler. As a ``Checkpoint`` callback it runs after the
        ``ModelCheckpoint`` of the same step; a SIGTERM that lands after it in a single-process run is
        checkpointed when Lightning stops (``on_exception``), so no finished step is lost.
        """

        def __init__(self, ckpt_dir: Path, stops: Any = None):
            self.ckpt_dir = Path(ckpt_dir)
            self.stops = stops  # the run's StopSignals: a Ctrl-C noted there stops training as SIGTERM does
            self.signum = _requeue_signal()
            self.requested = False
            self.saved_step = -1
            self._previous: Any = None

        def _handler(self, signum, frame) -> None:  # noqa: ARG002
            log.warning("received %s: checkpoint at the end of this step, then requeue",
                        signal.Signals(signum).name)
            self.requested = True

        def setup(self, trainer, pl_module, stage: str) -> None:
            if os.name == "posix" and self._previous is None:
                try:
                    self._previous = signal.signal(self.signum, self._handler)
                except ValueError:  # not the main thread: no signals here
                    log.debug("not the main thread: %s is not handled", signal.Signals(self.signum).name)

        def teardown(self, trainer, pl_module, stage: str) -> None:
            if self._previous is not None:
                signal.signal(self.signum, self._previous)
                self._previous = None

        def _any_rank(self, trainer, flags: list[bool]) -> list[bool]:
            if trainer.world_size <= 1 or not torch.distributed.is_initialized():
                return flags
            value = torch.tensor([1.0 if f else 0.0 for f in flags], device=trainer.strategy.root_device)
            torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
            return [bool(v > 0) for v in value.tolist()]

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            noted = self.stops is not None and self.stops.received is not None
            requeue, noted, sigterm = self._any_rank(trainer, [self.requested, noted,
                                                               bool(getattr(trainer, "received_sigterm", False))])
            if not (requeue or noted or sigterm):
                return
            step = trainer.global_step
            if self.saved_step != step:
                path = self.ckpt_dir / LAST_CKPT
                trainer.save_checkpoint(path)
                self.saved_step = step
                log.warning("saved %s at step %d before stopping", path, step)
            _flush_loggers(trainer)
            if requeue:
                self._hand_over(trainer)
            if noted and not sigterm and step < trainer.max_steps:
                raise SIGTERMException  # every rank agrees: stop as Lightning does after a SIGTERM

        def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
            # DDP ranks could stop at different steps here, and saving is collective: single process only
            if isinstance(exception, SIGTERMException) and trainer.world_size == 1 \
                    and self.saved_step != trainer.global_step and trainer.global_step > 0:
                path = self.ckpt_dir / LAST_CKPT
                trainer.save_checkpoint(path)
                self.saved_step = trainer.global_step
                log.warning("saved %s at step %d before stopping (SIGTERM)", path, trainer.global_step)
            if isinstance(exception, SIGTERMException):
                _flush_loggers(trainer)

        def _hand_over(self, trainer) -> None:
            previous = self._previous
            self.teardown(trainer, None, "fit")
            if callable(previous):
                log.info("handing over to the previous %s handler (submitit: requeue)",
                         signal.Signals(self.signum).name)
                previous(self.signum, None)  # submitit rank 0: requeue, then sys.exit; other ranks return
            if trainer.global_rank != 0 and callable(previous):
                # submitit does not stop the other ranks ("it might kill the master task"): wait for the
                # requeue to end the job step, as they would have, but never past the signal delay
                deadline = time.time() + 300
                while time.time() < deadline:
                    time.sleep(1)
            raise SystemExit(128 + int(self.signum))

    return SignalCheckpoint


def signal_checkpoint(ckpt_dir: Path, stops: Any = None):
    """A :class:`SignalCheckpoint` Lightning callback writing ``ckpt_dir/last.ckpt``; ``stops``: the run's
    :class:`~flash_exp.training.run_signals.StopSignals` (a SIGINT noted there stops training too)."""
    return _signal_checkpoint_callback_class()(ckpt_dir, stops)
