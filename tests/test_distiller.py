"""The distiller on a tiny SD backbone: CFG batching, teacher-call counts, K changes, one rollout."""

from __future__ import annotations

import pytest
import torch

from flash_exp.backbones import build_backbone
from flash_exp.backbones.condition import Condition
from flash_exp.config import validate
from flash_exp.method import build_distiller
from flash_exp.method.distiller import guided_output
from tests.conftest import compose
from tests.fixtures_weights import parameters_read, storages


def make_cfg(tiny_sd_dir, *overrides):
    return validate(compose([
        "backbone=sd15", f"backbone.pretrained={tiny_sd_dir}", "backbone.resolution=32",
        "backbone.lora.rank=4", "backbone.lora.alpha=4", "loss.distill.type=l2", "data.shards=[unused]",
        *overrides,
    ]))


@pytest.fixture(scope="module")
def backbone(tiny_sd_dir):
    return build_backbone(make_cfg(tiny_sd_dir).backbone)


def batch(backbone, b=2):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(b, 4, 16, 16, generator=g)
    cond = backbone.encode_prompts(["a red circle", "a blue square"][:b])
    return z, cond, backbone.null_condition(b)


def test_batched_cfg_equals_two_separate_calls(backbone):
    z, cond, null = batch(backbone)
    t = torch.tensor([500, 500])
    w = torch.tensor([3.0, 7.5])
    guided = guided_output(backbone, z, t, cond, null, w)
    with backbone.adapter(False):
        out_c = backbone.denoise(z, t, cond)
        out_u = backbone.denoise(z, t, null)
    expected = out_u + w.view(-1, 1, 1, 1) * (out_c - out_u)
    torch.testing.assert_close(guided, expected, rtol=1e-4, atol=1e-5)


def test_teacher_is_the_base_with_the_adapter_disabled(backbone):
    z, cond, _ = batch(backbone)
    t = torch.tensor([300, 300])
    with torch.no_grad():
        for p in backbone.trainable_parameters():  # make the LoRA do something
            p.add_(0.05 * torch.randn_like(p))
        with backbone.adapter(False):
            teacher = backbone.denoise(z, t, cond)
            teacher_read = parameters_read(lambda: backbone.denoise(z, t, cond))
        with backbone.adapter(True):
            student = backbone.denoise(z, t, cond)
            student_read = parameters_read(lambda: backbone.denoise(z, t, cond))
    assert (teacher - student).abs().max() > 1e-4
    # one copy of the base weights: the teacher reads the very storages the student reads, less its LoRA
    lora = storages(backbone.trainable_parameters())
    base = storages(p for p in backbone.base_denoiser.parameters() if not p.requires_grad)
    assert student_read & lora and not teacher_read & lora
    assert teacher_read == student_read - lora and len(teacher_read) > 10 and teacher_read <= base


def test_index_zero_starts_from_pure_noise(tiny_sd_dir, backbone):
    cfg = make_cfg(tiny_sd_dir)
    distiller = build_distiller(backbone, cfg)
    z, noise = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16)
    timesteps = distiller.teacher_timesteps(32)
    x_t, t = distiller.noisy_input(z, noise, torch.tensor([0, 8]), timesteps)
    torch.testing.assert_close(x_t[0], noise[0])
    assert t.tolist() == [999, 749]
    expected = backbone.schedule.add_noise(z[1:], noise[1:], torch.tensor([749]))
    torch.testing.assert_close(x_t[1:], expected)


def count_step(distiller, backbone, step):
    z, cond, null = batch(backbone)
    backbone.teacher_samples = backbone.student_samples = 0
    gen = torch.Generator().manual_seed(1)
    loss, logs, disc_inputs = distiller.generator_loss(z, cond, null, step, gen)
    loss.backward()
    after_generator = backbone.teacher_samples
    distiller.discriminator_loss(disc_inputs)[0].backward()
    return after_generator, backbone.teacher_samples, logs


def test_one_teacher_rollout_per_batch_with_counted_calls(tiny_sd_dir, backbone):
    # start index fixed at 0 (all mass on the first mode), K = 8, phase 3: all losses on
    cfg = make_cfg(tiny_sd_dir, "timesteps=modes", "phases.k=[8,8,8,8]", "phases.iterations=[1,1,1,1]",
                   "timesteps.mode_probs=[[1,0,0,0],[1,0,0,0],[1,0,0,0],[1,0,0,0]]")
    distiller = build_distiller(backbone, cfg)
    b = 2
    generator_calls, total, logs = count_step(distiller, backbone, step=3)
    # rollout: 8 steps x 2B (batched CFG); DMD real score: 2B; GAN fake features: B
    assert generator_calls == (8 * 2 + 2 + 1) * b
    # the discriminator step adds only the real features (B): no second rollout
    assert total == generator_calls + b
    assert logs["start_index"] == 0.0 and "loss/dmd" in logs and "loss/gan_generator" in logs


def test_zero_weight_losses_cost_nothing(tiny_sd_dir, backbone):
    cfg = make_cfg(tiny_sd_dir, "timesteps=modes", "phases.k=[8,8,8,8]",
                   "timesteps.mode_probs=[[1,0,0,0],[1,0,0,0],[1,0,0,0],[1,0,0,0]]",
                   "loss.adversarial.train_in_warmup=false")
    distiller = build_distiller(backbone, cfg)
    z, cond, null = batch(backbone)
    backbone.teacher_samples = 0
    _, logs, _ = distiller.generator_loss(z, cond, null, 0, torch.Generator().manual_seed(0))
    assert backbone.teacher_samples == 8 * 2 * 2  # warm-up: the rollout only
    assert "loss/dmd" not in logs and "loss/gan_generator" not in logs


def test_k_change_between_phases_runs(tiny_sd_dir, backbone):
    cfg = make_cfg(tiny_sd_dir, "phases.k=[4,8,16,4]", "phases.iterations=[1,1,1,1]",
                   "timesteps=modes", "timesteps.mode_probs=[[1,0,0,0],[1,0,0,0],[1,0,0,0],[1,0,0,0]]")
    distiller = build_distiller(backbone, cfg)
    seen = []
    for step in range(4):
        z, cond, null = batch(backbone)
        backbone.teacher_samples = 0
        loss, logs, _ = distiller.generator_loss(z, cond, null, step, torch.Generator().manual_seed(step))
        assert torch.isfinite(loss)
        seen.append((int(logs["k"]), backbone.teacher_samples))
    assert [k for k, _ in seen] == [4, 8, 16, 4]
    # the rollout length follows K: 2B per teacher step, plus DMD (2B) and GAN (B) after warm-up
    assert seen[0][1] == 4 * 2 * 2 and seen[2][1] == (16 * 2 + 2 + 1) * 2


def test_student_gradient_reaches_only_the_lora(tiny_sd_dir, backbone):
    cfg = make_cfg(tiny_sd_dir)
    distiller = build_distiller(backbone, cfg)
    z, cond, null = batch(backbone)
    for p in backbone.parameters():
        p.grad = None
    loss, _, _ = distiller.generator_loss(z, cond, null, 19999, torch.Generator().manual_seed(0))
    loss.backward()
    with_grad = {n for n, p in backbone.named_parameters() if p.grad is not None}
    assert with_grad and all("lora" in n for n in with_grad)


def test_condition_cat_and_select_roundtrip():
    a = Condition(kwargs={"h": torch.ones(2, 3), "extra": {"p": torch.zeros(2, 1)}}, concat=torch.ones(2, 5, 4, 4))
    b = Condition(kwargs={"h": torch.zeros(2, 3), "extra": {"p": torch.ones(2, 1)}}, concat=torch.zeros(2, 5, 4, 4))
    both = Condition.cat([a, b])
    assert both.kwargs["h"].shape == (4, 3) and both.concat.shape == (4, 5, 4, 4)
    back = both.select(slice(2, 4))
    torch.testing.assert_close(back.kwargs["extra"]["p"], b.kwargs["extra"]["p"])
