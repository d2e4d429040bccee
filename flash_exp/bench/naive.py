"""The naive "before" variants the training step avoids, kept to time what each avoidance saves:
a second teacher rollout for the discriminator update, CFG as two calls, ``no_grad`` instead of
``inference_mode``, and the classic attention processor instead of PyTorch SDPA."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from unittest import mock

import torch

from flash_exp.backbones.condition import Condition
from flash_exp.bench.steps import StepRunner
from flash_exp.method import distiller as distiller_module


class SecondRolloutStep(StepRunner):
    """The step as the official code runs it: the whole generator forward again (no grad) for the
    discriminator update, instead of the generator pass's cached inputs."""

    def __call__(self, step: int) -> None:
        opt_g, opt_d = self.optimizers
        loss, _, disc_inputs = self.d.generator_loss(self.z, self.cond, self.null, step, self.generator)
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        with torch.no_grad():
            _, _, disc_inputs = self.d.generator_loss(self.z, self.cond, self.null, step, self.generator)
        d_loss, _ = self.d.discriminator_loss(disc_inputs)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()


@contextlib.contextmanager
def cfg_as_two_calls() -> Iterator[None]:
    """Replace the batched CFG call by separate conditional and unconditional calls."""
    def two_calls(backbone, x_t, t, cond: Condition, null: Condition, guidance):
        with backbone.adapter(False):
            out_cond = backbone.denoise(x_t, t, cond)
            out_null = backbone.denoise(x_t, t, null)
        w = torch.as_tensor(guidance, dtype=x_t.dtype, device=x_t.device).reshape(-1, *([1] * (x_t.ndim - 1)))
        return out_null + w * (out_cond - out_null)

    with mock.patch.object(distiller_module, "guided_output", two_calls):
        yield


@contextlib.contextmanager
def no_grad_instead_of_inference_mode() -> Iterator[None]:
    """``torch.inference_mode`` replaced by ``torch.no_grad``."""
    with mock.patch.object(torch, "inference_mode", torch.no_grad):
        yield


@contextlib.contextmanager
def classic_attention(backbone) -> Iterator[None]:
    """The denoiser on diffusers' classic ``AttnProcessor`` instead of SDPA (``AttnProcessor2_0``)."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    backbone.denoiser.set_attn_processor(AttnProcessor())
    try:
        yield
    finally:
        backbone.denoiser.set_attn_processor(AttnProcessor2_0())
