"""``trainer.strategy=fsdp``: Lightning's FSDP strategy for teachers too large to replicate on every GPU.

What is sharded and what is not (:func:`shard`, run by the training module's ``configure_model``):

- The denoiser is an FSDP module whose units are its blocks (the classes the backbone's
  :meth:`~flash_exp.backbones.common.DiffusersBackbone.shard_blocks` names: SD3's
  ``JointTransformerBlock``, FLUX's ``FluxTransformerBlock`` / ``FluxSingleTransformerBlock``); its
  frozen base weights live once across the ranks, not once per rank.
- Every trainable leaf (a LoRA ``lora_A`` / ``lora_B`` layer) is a unit of its own, as in peft's
  ``fsdp_auto_wrap_policy``: FSDP flattens the parameters of a unit into one tensor of one dtype, and the
  LoRA trains in float32 beside bfloat16 frozen weights. No FSDP mixed precision: each weight computes
  in its own dtype under the precision plugin's autocast, as on one device.
- The discriminator head is an FSDP module of its own (its gradients averaged over the ranks).
- The VAE and the text encoders stay outside FSDP: each rank keeps its own frozen copy, and
  ``trainer.offload_frozen`` keeps their encoders in CPU memory as on one GPU.

The denoiser is its own FSDP root, not the whole training module: the manual optimisation calls
``manual_backward`` inside ``training_step``, which FSDP does not support inside the root's forward
(Lightning issues #19626, #19685: the handles are left in ``BACKWARD_POST`` and the next state dict
fails). ``use_orig_params=True`` keeps the parameter objects the optimisers are built from.
Checkpoints use Lightning's full state dict, gathered on rank 0, of which
:class:`~flash_exp.training.module.FlashModule` keeps the trainable entries only.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import nn

FSDP_PREFIX = "_fsdp_wrapped_module."  # what FSDP inserts into the names of the modules it wraps


def clean_name(name: str) -> str:
    """A parameter or module name as it reads without FSDP's wrappers."""
    return name.replace(FSDP_PREFIX, "")


def wraps_alone(module: nn.Module, block_names: frozenset[str]) -> bool:
    """True for the modules that become FSDP units of their own: the backbone's blocks and every
    trainable leaf (its parameters must not share a flattened tensor with frozen ones of another dtype)."""
    if type(module).__name__ in block_names:
        return True
    params = list(module.parameters(recurse=False))
    return not list(module.children()) and bool(params) and all(p.requires_grad for p in params)


def fsdp_strategy(accelerator: str):
    """Lightning's ``FSDPStrategy`` (full state dicts, original parameters); on ``accelerator="cpu"``
    (gloo) :func:`cpu_fsdp_strategy_class`'s. It wraps nothing itself: :func:`shard` has done it."""
    from lightning.pytorch.strategies import FSDPStrategy

    cls = cpu_fsdp_strategy_class() if str(accelerator).lower() == "cpu" else FSDPStrategy
    return cls(use_orig_params=True, state_dict_type="full")


def cpu_fsdp_strategy_class() -> type:
    """``FSDPStrategy`` for CPU processes: Lightning 2.6's accelerator connector refuses the exact class
    on any accelerator but CUDA (``The strategy `fsdp` requires a GPU accelerator``), while torch's FSDP
    runs on CPU tensors over gloo when it is given ``device_id=cpu`` (:func:`shard` does). A subclass,
    changing nothing, passes that check; the CPU runs are what test sharding against DDP without GPUs."""
    from lightning.pytorch.strategies import FSDPStrategy

    class CPUFSDPStrategy(FSDPStrategy):
        pass

    CPUFSDPStrategy.__doc__ = cpu_fsdp_strategy_class.__doc__
    return CPUFSDPStrategy


def shard(module: nn.Module, device: torch.device) -> None:
    """Move the training ``module`` to ``device`` (the denoiser as FSDP shards it) and wrap its denoiser (units: the backbone's blocks and
    the trainable leaves) and its discriminator head in FSDP. Raises ``ValueError`` when a trainable
    weight would stay outside FSDP (its gradients would not be averaged over the ranks)."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import lambda_auto_wrap_policy

    backbone = module.backbone
    move_all_but(module, backbone.base_denoiser, device)  # FSDP moves the denoiser unit by unit, sharded
    policy = functools.partial(lambda_auto_wrap_policy,
                               lambda_fn=functools.partial(wraps_alone, block_names=frozenset(backbone.shard_blocks())))
    wrap = functools.partial(FSDP, auto_wrap_policy=policy, use_orig_params=True, device_id=device)
    backbone.shard_denoiser(wrap)
    head = getattr(module.distiller, "discriminator", None)
    if head is not None:
        module.distiller.discriminator = wrap(head)
    outside = [n for n, p in module.named_parameters() if p.requires_grad and FSDP_PREFIX not in n]
    if outside:
        raise ValueError(f"trainer.strategy=fsdp shards the denoiser's LoRA and the discriminator head; "
                         f"{len(outside)} other trainable weights would not be averaged, e.g. {outside[0]}")


def move_all_but(module: nn.Module, kept: nn.Module, device: torch.device) -> None:
    """Move the submodules of ``module`` to ``device``, all but ``kept`` (wherever it is reached from)."""
    for child in module.children():
        if child is kept:
            continue
        if any(m is kept for m in child.modules()):
            move_all_but(child, kept, device)
        else:
            child.to(device)


def is_fsdp(trainer) -> bool:
    from lightning.pytorch.strategies import FSDPStrategy

    return trainer is not None and isinstance(trainer.strategy, FSDPStrategy)


@contextlib.contextmanager
def full_parameters(trainer) -> Iterator[None]:
    """Inside the block every rank holds the whole of every parameter (FSDP's ``summon_full_params``,
    read-only: changes are not written back); a no-op under other strategies. Collective: every rank
    must enter it."""
    if not is_fsdp(trainer):
        yield
        return
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    with FSDP.summon_full_params(trainer.strategy.model, writeback=False):
        yield
