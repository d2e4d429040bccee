"""The Flash Diffusion losses as plain functions of tensors.

Shapes: latents and images are (B, C, H, W); discriminator logits are (B, ...) of any trailing shape.
Every loss returns a scalar averaged over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


# ---------------------------------------------------------------------------------- distillation
def distillation_loss(
    kind: str, student: torch.Tensor, teacher: torch.Tensor, lpips: torch.nn.Module | None = None
) -> torch.Tensor:
    """d(student x0, teacher x0): ``l2`` / ``l1`` in latent space, or ``lpips`` on decoded images.

    For ``lpips`` the inputs must already be images in [-1, 1] (see :func:`central_crop`).
    """
    if kind == "l2":
        return F.mse_loss(student, teacher)
    if kind == "l1":
        return F.l1_loss(student, teacher)
    if kind == "lpips":
        if lpips is None:
            raise ValueError("the lpips distillation loss needs an LPIPS network")
        return lpips(student.clamp(-1, 1), teacher.clamp(-1, 1)).mean()
    raise ValueError(f"unknown distillation loss {kind!r}")


def central_crop(latents: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` window of (B, C, H, W) latents (all of it when smaller)."""
    h, w = latents.shape[-2:]
    top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return latents[..., top : top + min(size, h), left : left + min(size, w)]


# ---------------------------------------------------------------------------------- adversarial
def generator_gan_loss(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """The student's adversarial loss on the discriminator's logits for its samples."""
    if kind == "lsgan":  # least squares on sigmoid outputs, as the official code
        return F.mse_loss(torch.sigmoid(fake_logits), torch.ones_like(fake_logits))
    if kind == "vanilla":  # -E[log D(fake)] written as BCE with target 1
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    if kind == "non-saturating":
        return F.softplus(-fake_logits).mean()
    if kind in ("hinge", "wgan"):
        return -fake_logits.mean()
    raise ValueError(f"unknown GAN loss {kind!r}")


def discriminator_gan_loss(kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss on logits for real and (detached) fake samples.

    As the official code: lsgan averages its real and fake terms (the ½ of least squares GANs); hinge,
    vanilla and non-saturating sum them.
    """
    if kind == "lsgan":
        real = F.mse_loss(torch.sigmoid(real_logits), torch.ones_like(real_logits))
        fake = F.mse_loss(torch.sigmoid(fake_logits), torch.zeros_like(fake_logits))
        return 0.5 * (real + fake)
    if kind == "vanilla":
        real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        return real + fake
    if kind == "non-saturating":
        return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    if kind == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    if kind == "wgan":  # weights are clipped after the optimiser step (see the distiller)
        return fake_logits.mean() - real_logits.mean()
    raise ValueError(f"unknown GAN loss {kind!r}")


# ---------------------------------------------------------------------------------- DMD
def dmd_loss(
    x0_student: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """Distribution matching loss with the DMD normalisation.

    ``x0_real`` is the teacher's (CFG) clean estimate and ``x0_fake`` the fake-score model's (here the
    student itself) at the same noisy point. Their difference equals (eps_real - eps_fake) * sigma_t /
    alpha_t, the DMD gradient, for any parametrisation. It is normalised per sample by
    mean|x0_student - x0_real| and applied through an MSE against a stop-gradient target, without the
    ½ of DMD2's form: the official code's scale, which the paper's λ_DMD were tuned for. The gradient
    with respect to ``x0_student`` is 2 * grad / numel.
    """
    reduce_dims = tuple(range(1, x0_student.ndim))
    weight = 1.0 / ((x0_student - x0_real).abs().mean(dim=reduce_dims, keepdim=True) + eps)
    grad = torch.nan_to_num((x0_fake - x0_real) * weight)
    target = (x0_student - grad).detach()
    return F.mse_loss(x0_student, target)
