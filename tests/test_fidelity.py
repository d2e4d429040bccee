"""The Flash step against the official code's formulas, each written out here (paper-facts §3b, §5, §6).

Nothing in this module computes a reference with the project's own helpers: each loss, boundary and
noise level is the official code's expression, typed out from its source as recorded in paper-facts.
"""

from __future__ import annotations

import math

import pytest
import torch

from flash_exp.backbones.noise_schedule import NoiseSchedule
from flash_exp.config import validate
from flash_exp.method.discriminator import DiscriminatorHead
from flash_exp.method.losses import discriminator_gan_loss, dmd_loss, generator_gan_loss
from flash_exp.method.phases import PhaseSchedule
from tests.conftest import compose

torch.manual_seed(0)
LOGITS_REAL = torch.randn(6, 1)
LOGITS_FAKE = torch.randn(6, 1)
PATCH_REAL = torch.randn(3, 25)  # SD3's head: 25 patch logits per sample
PATCH_FAKE = torch.randn(3, 25)


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    return 1.0 / (1.0 + torch.exp(-x))


def official_generator(kind: str, fake: torch.Tensor) -> torch.Tensor:
    """The official ``_gan_loss`` generator terms; a (B, N) logit map against a (B, 1) target broadcasts."""
    target = torch.ones(fake.shape[0], 1)
    if kind == "lsgan":
        return ((sigmoid(fake) - target) ** 2).mean()
    if kind in ("vanilla", "non-saturating"):
        return (-torch.log(sigmoid(fake))).mean()
    return -fake.mean()  # hinge, wgan


def official_discriminator(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The official discriminator terms: lsgan halves the sum, hinge / vanilla / non-saturating do not."""
    if kind == "lsgan":
        return 0.5 * (((sigmoid(real) - 1) ** 2).mean() + (sigmoid(fake) ** 2).mean())
    if kind in ("vanilla", "non-saturating"):
        return (-torch.log(sigmoid(real))).mean() + (-torch.log(1 - sigmoid(fake))).mean()
    if kind == "hinge":
        return torch.clamp(1 - real, min=0).mean() + torch.clamp(1 + fake, min=0).mean()
    return fake.mean() - real.mean()  # wgan


GAN_KINDS = ["lsgan", "hinge", "vanilla", "non-saturating", "wgan"]


@pytest.mark.parametrize("kind", GAN_KINDS)
@pytest.mark.parametrize("shape", ["one_logit", "sd3_patches"])
def test_gan_losses_equal_the_official_formulas(kind, shape):
    real, fake = (LOGITS_REAL, LOGITS_FAKE) if shape == "one_logit" else (PATCH_REAL, PATCH_FAKE)
    torch.testing.assert_close(generator_gan_loss(kind, fake), official_generator(kind, fake), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(discriminator_gan_loss(kind, real, fake), official_discriminator(kind, real, fake),
                               rtol=1e-6, atol=1e-7)


def test_dmd_value_and_gradient_equal_the_official_term():
    """Official: grad = (x0_fake - x0_real) / mean|x0 - x0_real|; loss = mse(x0, (x0 - grad).detach())."""
    x0 = torch.randn(3, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    x0_real = torch.randn(3, 4, 8, 8, dtype=torch.float64)
    x0_fake = torch.randn(3, 4, 8, 8, dtype=torch.float64)

    weight = 1.0 / ((x0.detach() - x0_real).abs().mean(dim=(1, 2, 3), keepdim=True) + 1e-5)
    grad = (x0_fake - x0_real) * weight
    expected_value = ((x0.detach() - (x0.detach() - grad)) ** 2).mean()
    expected_grad = 2.0 * grad / x0.numel()  # d/dx0 of mean((x0 - c)^2) at c = x0 - grad

    value = dmd_loss(x0, x0_real, x0_fake)
    value.backward()
    assert math.isclose(value.item(), expected_value.item(), rel_tol=1e-6)
    torch.testing.assert_close(x0.grad, expected_grad, rtol=1e-6, atol=0)


@pytest.mark.parametrize(("backbone", "boundaries"), [
    ("sd15", [2500, 5000, 7500, 10000]),
    ("sdxl", [2500, 5000, 7500, 10000]),
    ("sd3", [2500, 5000, 7500, 10000]),
    ("pixart", [5000, 10000, 15000, 20000]),
])
def test_phase_boundaries_are_the_official_forward_calls_halved(backbone, boundaries):
    """The official code counts a forward call per iteration, two per data batch (generator, then
    discriminator), and switches phase every NUM_ITERATIONS_PER_K = 5,000 (PixArt 10,000) of them."""
    official_per_phase = 10_000 if backbone == "pixart" else 5_000
    assert [official_per_phase // 2 * i for i in (1, 2, 3, 4)] == boundaries
    cfg = validate(compose([f"backbone={backbone}", "backbone.pretrained=/x", "data.shards=[x]"]))
    schedule = PhaseSchedule.from_config(cfg.phases, cfg.loss, cfg.timesteps, cfg.backbone.guidance_range)
    assert schedule.boundaries == boundaries
    first = boundaries[0]
    assert [schedule.at(s).name for s in (0, first - 1, first, boundaries[1], boundaries[2], boundaries[3] + 7)] == [
        "warmup", "warmup", "phase1", "phase2", "phase3", "phase3"]


def sd3_schedule() -> NoiseSchedule:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return NoiseSchedule.from_scheduler(FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0), "flow")


def test_sd3_gan_levels_are_read_on_the_shifted_schedule():
    """Official SD3: levels = scheduler.timesteps[-10], [-250], [-500], [-750] of the 1000-step shifted
    schedule, sigma = 3 s / (1 + 2 s) with s = 0.01, 0.25, 0.5, 0.75."""
    expected_sigma = [3 * s / (1 + 2 * s) for s in (0.01, 0.25, 0.5, 0.75)]
    assert [round(x, 3) for x in expected_sigma] == [0.029, 0.5, 0.75, 0.9]
    schedule = sd3_schedule()
    t = schedule.shift_timesteps(torch.tensor([10, 250, 500, 750]))
    _, sigma = schedule.alpha_sigma(t)
    for got, want in zip(sigma.flatten().tolist(), expected_sigma, strict=True):
        assert abs(got - want) < 1e-3


def test_sd3_dmd_draws_follow_the_shifted_law():
    """Official SD3: idx ~ U{0..999}, t = scheduler.timesteps[idx], i.e. s = (1000 - idx) / 1000 shifted.
    P(sigma > 0.5) = P(3 s / (1 + 2 s) > 0.5) = P(s > 0.25), computed here by enumeration."""
    s_official = torch.arange(1000, 0, -1, dtype=torch.float64) / 1000
    p_expected = float(((3 * s_official / (1 + 2 * s_official)) > 0.5).double().mean())
    assert abs(p_expected - 0.75) < 1e-9

    schedule = sd3_schedule()
    grid = schedule.training_timesteps()
    draws = grid[torch.randint(len(grid), (100_000,), generator=torch.Generator().manual_seed(0))]
    _, sigma = schedule.alpha_sigma(schedule.shift_timesteps(draws), ndim=1)
    assert abs(float((sigma > 0.5).double().mean()) - p_expected) < 0.01


def test_diffusion_schedules_leave_the_levels_unshifted():
    schedule = NoiseSchedule("epsilon", torch.linspace(0.99, 0.01, 1000, dtype=torch.float64))
    t = torch.tensor([10, 250, 500, 750])
    assert torch.equal(schedule.shift_timesteps(t), t)


# ------------------------------------------------------------------ the official heads, layer by layer
def official_head(kind: str, in_channels: int, dim: int, n_strided: int) -> torch.nn.Sequential:
    """The official ``nn.Sequential`` heads of examples/train_flash_*.py, typed out."""
    nn = torch.nn
    if kind == "sd15":
        return nn.Sequential(nn.Conv2d(in_channels, dim, 3, 1, 1), nn.SiLU(True),
                             nn.Conv2d(dim, dim * 2, 4, 2, 1, bias=False), nn.SiLU(True), nn.GroupNorm(4, dim * 2),
                             nn.Conv2d(dim * 2, 1, 4, 1, 0, bias=False), nn.Flatten())
    layers = [nn.Conv2d(in_channels, dim, 4, 2, 1, bias=False), nn.SiLU(True)]
    for i in range(1, n_strided):
        layers += [nn.Conv2d(dim * 2 ** (i - 1), dim * 2**i, 4, 2, 1, bias=False), nn.GroupNorm(4, dim * 2**i),
                   nn.SiLU(True)]
    return nn.Sequential(*layers, nn.Conv2d(dim * 2 ** (n_strided - 1), 1, 4, 1, 0, bias=False), nn.Flatten())


HEADS = {  # backbone: (our head, channels, official kind, in_channels, dim, strided convs, feature side)
    "sd15": ("flash_sd15", [64, 128], "sd15", 1280, 64, 0, 8),
    "sdxl": ("flash_strided", [256, 512, 1024], "strided", 1280, 256, 3, 32),
    "pixart": ("flash_strided", [64, 128, 256, 512, 1024], "strided", 4, 64, 5, 128),
    "sd3": ("flash_strided", [64, 128, 256, 512], "strided", 16, 64, 4, 128),
    "canny_sdxl": ("flash_strided", [64, 128, 256], "strided", 1280, 64, 3, 32),
}


@pytest.mark.parametrize("name", list(HEADS))
def test_heads_equal_the_official_heads(name):
    head, channels, kind, c_in, dim, n, side = HEADS[name]
    ours = DiscriminatorHead(head, c_in, side, channels)
    ref = official_head(kind, c_in, dim, n)
    ours_state, ref_state = ours.net.state_dict(), ref.state_dict()
    assert [tuple(v.shape) for v in ours_state.values()] == [tuple(v.shape) for v in ref_state.values()]
    ours.net.load_state_dict(dict(zip(ours_state, ref_state.values(), strict=True)))
    x = torch.randn(2, c_in, side, side)
    torch.testing.assert_close(ours(x), ref(x))
    assert ours(x).shape == (2, 25 if name == "sd3" else 1)


@pytest.mark.parametrize("backbone", ["sd15", "sdxl", "pixart", "sd3"])
def test_each_backbone_config_picks_its_official_head(backbone):
    cfg = validate(compose([f"backbone={backbone}", "backbone.pretrained=/x", "data.shards=[x]"]))
    head, channels, *_ = HEADS[backbone]
    assert (cfg.backbone.discriminator.head, list(cfg.backbone.discriminator.channels)) == (head, channels)
    assert cfg.backbone.discriminator.input == ("output" if backbone in ("pixart", "sd3") else "features")


def test_canny_sdxl_picks_the_official_canny_head():
    cfg = validate(compose(["backbone=sdxl", "task=adapter_canny", "backbone.pretrained=/x", "data.shards=[x]"]))
    assert (cfg.backbone.discriminator.head, list(cfg.backbone.discriminator.channels)) == (
        "flash_strided", [64, 128, 256])


def test_a_head_on_features_too_small_names_the_setting():
    with pytest.raises(ValueError, match="backbone.discriminator.head='flash_sd15'"):
        DiscriminatorHead("flash_sd15", 128, 4, [64, 128])


class _Stop(Exception):
    pass


def full_size_mid_block_shape(name: str, resolution: int, context_dim: int) -> tuple[int, ...]:
    """The mid-block output shape of the full-size UNet (shipped config, meta device: no weights)."""
    import json

    from diffusers import UNet2DConditionModel

    from flash_exp.backbones.lora_count import ARCHITECTURES

    config = json.loads((ARCHITECTURES / f"{name}_unet.json").read_text())
    shapes = []

    def stop(_module, _inputs, output):
        shapes.append(tuple(output.shape))
        raise _Stop

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
        unet.mid_block.register_forward_hook(stop)
        extra = {"added_cond_kwargs": {"text_embeds": torch.empty(1, 1280), "time_ids": torch.empty(1, 6)}} \
            if name == "sdxl" else {}
        with pytest.raises(_Stop):
            latent = resolution // 8
            unet(torch.empty(1, 4, latent, latent), torch.tensor([10]),
                 encoder_hidden_states=torch.empty(1, 77, context_dim), **extra)
    return shapes[0]


@pytest.mark.parametrize(("backbone", "params"), [
    ("sd15", 870_720), ("sdxl", 15_748_096), ("pixart", 11_165_440), ("sd3", 2_778_880)])
def test_each_backbone_head_on_its_paper_resolution_input(backbone, params):
    """One logit per sample (SD3: its 25 patch logits), on the shape the full-size teacher gives at the
    paper's resolution; parameter counts from the official layer list (typed out above)."""
    cfg = validate(compose([f"backbone={backbone}", "backbone.pretrained=/x", "data.shards=[x]"])).backbone
    if backbone in ("sd15", "sdxl"):
        shape = full_size_mid_block_shape(backbone, cfg.resolution, 768 if backbone == "sd15" else 2048)
    else:  # the teacher's output: the latents, 4 (PixArt) or 16 (SD3) channels at 1024 / 8
        shape = (1, 4 if backbone == "pixart" else 16, cfg.resolution // 8, cfg.resolution // 8)
    with torch.device("meta"):
        head = DiscriminatorHead(cfg.discriminator.head, shape[1], shape[2], list(cfg.discriminator.channels))
        logits = head(torch.empty(2, *shape[1:]))
    assert logits.shape == (2, 25 if backbone == "sd3" else 1)
    _, _, kind, c_in, dim, n, _ = HEADS[backbone]
    with torch.device("meta"):
        official = official_head(kind, c_in, dim, n)
    assert sum(p.numel() for p in head.parameters()) == sum(p.numel() for p in official.parameters()) == params
