"""The methods beside Flash: LCM and DMD2 losses against their formulas written out here, config
validation, and a two-step run per method on the tiny SD1.5 and SDXL teachers whose export reproduces
the in-memory student in a plain diffusers pipeline."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from flash_exp.config import ConfigError, validate
from tests.conftest import compose, solid_samples, write_shard

PROMPTS = ["a red circle", "a blue square"]


def method_cfg(directory, backbone: str, *overrides: str):
    return validate(compose([
        f"backbone={backbone}", f"backbone.pretrained={directory}", "backbone.resolution=32",
        "backbone.lora.rank=4", "backbone.lora.alpha=8", "backbone.discriminator.head=generic",
        "backbone.discriminator.channels=[16,32]", "backbone.teacher_sampling.steps=2", "loss.distill.type=l2",
        "data.shards=[unused]", "data.batch_size=2", "data.min_aesthetic_score=null", "data.shuffle_buffer=8",
        "phases.k=[4,4,4,4]", "phases.iterations=[1,1,1,1]", "trainer.accelerator=cpu",
        "trainer.checkpoint_every=2", "trainer.sample_every=0", "trainer.num_sample_prompts=1",
        "trainer.sample_nfe=[1]", "trainer.optim.lr=1e-3", "trainer.optim.lr_discriminator=1e-3", *overrides,
    ]))


def perturb_lora(unet, adapter: str, seed: int) -> None:
    """Random weights in one adapter, so that it differs from the teacher (LoRA up-projections start at 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if f".{adapter}." in name and "lora_" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def eps_of(unet, x, t, states):
    return unet(x, t, encoder_hidden_states=states, return_dict=False)[0]


# ---------------------------------------------------------------------------------- config
@pytest.mark.parametrize(("override", "message"), [
    ("method.lcm.num_ddim_timesteps=abc", r"method\.lcm\.num_ddim_timesteps='abc': must be of type int"),
    ("method.lcm.guidance_range=fast", r"method\.lcm\.guidance_range='fast': must be of type list\[float\]"),
    ("method.dmd2.gan=maybe", r"method\.dmd2\.gan='maybe': must be of type bool"),
])
def test_a_method_setting_of_the_wrong_type_is_a_config_error(override, message):
    method = override.split(".")[1]
    with pytest.raises(ConfigError, match=message):
        validate(compose([f"method={method}", override, "data.shards=[x]"]))


def test_a_setting_of_another_method_is_rejected_naming_the_key():
    with pytest.raises(ConfigError, match=r"method\.dmd2\.fake_updates.*method=dmd2"):
        validate(compose(["method=lcm", "+method.dmd2.fake_updates=2", "data.shards=[x]"]))
    with pytest.raises(ConfigError, match=r"method\.lcm\.loss.*loss, timesteps and phases"):
        validate(compose(["+method.lcm.loss=l2", "data.shards=[x]"]))
    with pytest.raises(ConfigError, match=r"method\.lcm\.huber.*num_ddim_timesteps, guidance_range"):
        validate(compose(["method=lcm", "+method.lcm.huber=1", "data.shards=[x]"]))
    with pytest.raises(ConfigError, match=r"method\.lcm\.loss.*huber, l2"):
        validate(compose(["method=lcm", "method.lcm.loss=l1", "data.shards=[x]"]))


# ---------------------------------------------------------------------------------- LCM
def test_lcm_loss_is_one_ddim_solver_step_and_the_consistency_target(tiny_sd_dir):
    from flash_exp.backbones import build_backbone
    from flash_exp.method.lcm import LCMDistiller

    cfg = method_cfg(tiny_sd_dir, "sd15", "method=lcm", "method.lcm.guidance_range=[2.0,8.0]")
    backbone = build_backbone(cfg.backbone)
    unet = backbone.unet
    perturb_lora(unet, "default", 0)
    distiller = LCMDistiller(backbone, cfg.backbone, cfg.method.lcm_settings())
    z = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    cond, null = backbone.encode_prompts(PROMPTS), backbone.null_condition(2)
    loss, _ = distiller.loss(z, cond, null, torch.Generator().manual_seed(5))

    # the diffusers LCM-LoRA script, written out: the same draws from the same generator
    g = torch.Generator().manual_seed(5)
    ac = backbone.make_scheduler("teacher").alphas_cumprod.double()
    step_ratio = 1000 // 50
    ddim_timesteps = (torch.arange(1, 51) * step_ratio).round().long() - 1
    ddim_alpha_prev = torch.cat([ac[:1], ac[ddim_timesteps[:-1]]])
    index = torch.randint(0, 50, (2,), generator=g)
    w_ours = 2.0 + 6.0 * torch.rand((2,), generator=g)
    noise = torch.randn(z.shape, generator=g)
    start = ddim_timesteps[index]
    prev = (start - step_ratio).clamp(min=0)
    a = ac[start].float().view(-1, 1, 1, 1)
    x = a.sqrt() * z + (1 - a).sqrt() * noise

    def scalings(t):
        c_skip = 0.25 / ((t.double() * 10) ** 2 + 0.25)
        c_out = (t.double() * 10) / ((t.double() * 10) ** 2 + 0.25).sqrt()
        return c_skip.float().view(-1, 1, 1, 1), c_out.float().view(-1, 1, 1, 1)

    states = cond.kwargs["encoder_hidden_states"]
    null_states = null.kwargs["encoder_hidden_states"]
    with torch.no_grad():
        eps = eps_of(unet, x, start, states)
        c_skip, c_out = scalings(start)
        model_pred = c_skip * x + c_out * (x - (1 - a).sqrt() * eps) / a.sqrt()
        unet.disable_adapters()
        cond_eps, uncond_eps = eps_of(unet, x, start, states), eps_of(unet, x, start, null_states)
        unet.enable_adapters()
        cond_x0 = (x - (1 - a).sqrt() * cond_eps) / a.sqrt()
        uncond_x0 = (x - (1 - a).sqrt() * uncond_eps) / a.sqrt()
        w = (w_ours - 1).view(-1, 1, 1, 1)  # the script's w: cond + w * (cond - uncond)
        pred_x0 = cond_x0 + w * (cond_x0 - uncond_x0)
        pred_eps = cond_eps + w * (cond_eps - uncond_eps)
        a_prev = ddim_alpha_prev[index].float().view(-1, 1, 1, 1)
        x_prev = a_prev.sqrt() * pred_x0 + (1 - a_prev).sqrt() * pred_eps
        a_t = ac[prev].float().view(-1, 1, 1, 1)
        target_eps = eps_of(unet, x_prev, prev, states)
        c_skip_t, c_out_t = scalings(prev)
        target = c_skip_t * x_prev + c_out_t * (x_prev - (1 - a_t).sqrt() * target_eps) / a_t.sqrt()
        expected = torch.mean(torch.sqrt((model_pred - target) ** 2 + 0.001**2) - 0.001)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------------------------- DMD2
def test_distribution_matching_gradient_is_dmd2s():
    from flash_exp.method.dmd2 import distribution_matching_loss

    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, 8, 8, generator=g).requires_grad_(True)
    x0_real, x0_fake = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    loss = distribution_matching_loss(x0, x0_real, x0_fake)
    loss.backward()
    # DMD2's guidance model: p_real = latents - pred_real_image, p_fake = latents - pred_fake_image
    p_real, p_fake = x0.detach() - x0_real, x0.detach() - x0_fake
    grad = (p_real - p_fake) / p_real.abs().mean(dim=[1, 2, 3], keepdim=True)
    expected = 0.5 * F.mse_loss(x0.detach(), x0.detach() - grad)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=0)
    torch.testing.assert_close(x0.grad, grad / grad.numel(), rtol=1e-4, atol=1e-9)


@pytest.fixture(scope="module")
def dmd2_distiller(tiny_sd_dir):
    from flash_exp.backbones import build_backbone
    from flash_exp.method.dmd2 import FAKE_ADAPTER, DMD2Distiller

    cfg = method_cfg(tiny_sd_dir, "sd15", "method=dmd2", "method.dmd2.gan=false", "method.dmd2.real_guidance=3.0")
    backbone = build_backbone(cfg.backbone)
    distiller = DMD2Distiller(backbone, cfg.backbone, cfg.method.dmd2_settings())
    perturb_lora(backbone.unet, "default", 0)
    perturb_lora(backbone.unet, FAKE_ADAPTER, 1)
    return distiller


def test_fake_score_loss_is_the_denoising_loss_of_the_fake_adapter(dmd2_distiller):
    backbone = dmd2_distiller.backbone
    unet = backbone.unet
    x0 = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(2))
    cond = backbone.encode_prompts(PROMPTS)
    loss, _ = dmd2_distiller.fake_loss(x0, x0, cond, torch.Generator().manual_seed(3))

    g = torch.Generator().manual_seed(3)
    t = torch.randint(20, 981, (2,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    ac = backbone.make_scheduler("teacher").alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = ac.sqrt() * x0 + (1 - ac).sqrt() * noise
    unet.set_adapter("fake")
    with torch.no_grad():
        expected = F.mse_loss(eps_of(unet, x_t, t, cond.kwargs["encoder_hidden_states"]), noise)
    unet.set_adapter("default")
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-7)

    # the loss trains the fake adapter only
    for p in backbone.unet.parameters():
        p.grad = None
    dmd2_distiller.fake_loss(x0, x0, cond, torch.Generator().manual_seed(3))[0].backward()
    grads = {n: p.grad for n, p in backbone.unet.named_parameters() if "lora_" in n}
    assert all(v is not None for n, v in grads.items() if ".fake." in n)
    assert all(v is None for n, v in grads.items() if ".default." in n)


def test_dmd_term_uses_the_teacher_cfg_as_real_and_the_fake_adapter_as_fake(dmd2_distiller):
    backbone = dmd2_distiller.backbone
    unet = backbone.unet
    x0 = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(4))
    cond, null = backbone.encode_prompts(PROMPTS), backbone.null_condition(2)
    loss = dmd2_distiller.dmd_term(x0, cond, null, torch.Generator().manual_seed(6))

    g = torch.Generator().manual_seed(6)
    t = torch.randint(20, 981, (2,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    ac = backbone.make_scheduler("teacher").alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = ac.sqrt() * x0 + (1 - ac).sqrt() * noise
    states, null_states = cond.kwargs["encoder_hidden_states"], null.kwargs["encoder_hidden_states"]
    with torch.no_grad():
        unet.disable_adapters()
        cond_eps, uncond_eps = eps_of(unet, x_t, t, states), eps_of(unet, x_t, t, null_states)
        unet.enable_adapters()
        real_eps = uncond_eps + 3.0 * (cond_eps - uncond_eps)
        unet.set_adapter("fake")
        fake_eps = eps_of(unet, x_t, t, states)
        unet.set_adapter("default")
    pred_real = (x_t - (1 - ac).sqrt() * real_eps) / ac.sqrt()
    pred_fake = (x_t - (1 - ac).sqrt() * fake_eps) / ac.sqrt()
    p_real, p_fake = x0 - pred_real, x0 - pred_fake
    grad = (p_real - p_fake) / p_real.abs().mean(dim=[1, 2, 3], keepdim=True)
    expected = 0.5 * F.mse_loss(x0, x0 - grad)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-8)


# ---------------------------------------------------------------------------------- DMD2 on flow matching
@pytest.fixture(scope="module")
def flow_dmd2_distiller(tiny_dir):
    """DMD2 on the tiny SD3.5 teacher (flow matching, shift 3): student and fake adapters perturbed."""
    from flash_exp.backbones import build_backbone
    from flash_exp.method.dmd2 import FAKE_ADAPTER, DMD2Distiller

    cfg = method_cfg(tiny_dir("sd35"), "sd35", "method=dmd2", "method.dmd2.gan=false",
                     "method.dmd2.real_guidance=3.0", "backbone.discriminator.input=output")
    backbone = build_backbone(cfg.backbone)
    distiller = DMD2Distiller(backbone, cfg.backbone, cfg.method.dmd2_settings())
    perturb_lora(backbone.transformer, "default", 0)
    perturb_lora(backbone.transformer, FAKE_ADAPTER, 1)
    return distiller


def flow_sigmas(g: torch.Generator, shift: float = 3.0) -> torch.Tensor:
    """The DMD draw on SD3's support written out: unshifted t ~ U{20..980}, s = t / 1000, then the flow
    scheduler's shift sigma = shift s / (1 + (shift - 1) s), (2,)."""
    s = torch.arange(20, 981)[torch.randint(961, (2,), generator=g)].double() / 1000
    return (shift * s / (1 + (shift - 1) * s)).float().view(-1, 1, 1, 1)


def velocity_of(transformer, x, sigma, cond):
    return transformer(hidden_states=x, timestep=sigma.view(-1) * 1000, return_dict=False,
                       encoder_hidden_states=cond.kwargs["encoder_hidden_states"],
                       pooled_projections=cond.kwargs["pooled_projections"])[0]


def test_flow_dmd2_samples_with_the_euler_sampler_of_its_flash_student(flow_dmd2_distiller):
    from diffusers import FlowMatchEulerDiscreteScheduler

    backbone = flow_dmd2_distiller.backbone
    assert type(backbone.make_scheduler("student")) is FlowMatchEulerDiscreteScheduler
    assert not backbone.student_boundary_condition
    euler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    euler.set_timesteps(4)
    torch.testing.assert_close(flow_dmd2_distiller.timesteps, euler.timesteps)


def test_flow_fake_score_loss_is_the_velocity_loss_of_the_fake_adapter(flow_dmd2_distiller):
    backbone = flow_dmd2_distiller.backbone
    transformer = backbone.transformer
    x0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    cond = backbone.encode_prompts(PROMPTS)
    loss, _ = flow_dmd2_distiller.fake_loss(x0, x0, cond, torch.Generator().manual_seed(3))

    g = torch.Generator().manual_seed(3)
    sigma = flow_sigmas(g)
    noise = torch.randn(x0.shape, generator=g)
    x_t = (1 - sigma) * x0 + sigma * noise
    transformer.set_adapter("fake")
    with torch.no_grad():
        expected = F.mse_loss(velocity_of(transformer, x_t, sigma, cond), noise - x0)
    transformer.set_adapter("default")
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-7)


def test_flow_dmd_gradient_is_on_the_x0_estimates_of_the_teacher_cfg_and_the_fake_adapter(flow_dmd2_distiller):
    backbone = flow_dmd2_distiller.backbone
    transformer = backbone.transformer
    x0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4)).requires_grad_(True)
    cond, null = backbone.encode_prompts(PROMPTS), backbone.null_condition(2)
    loss = flow_dmd2_distiller.dmd_term(x0, cond, null, torch.Generator().manual_seed(6))
    loss.backward()

    g = torch.Generator().manual_seed(6)
    sigma = flow_sigmas(g)
    noise = torch.randn(x0.shape, generator=g)
    z = x0.detach()
    x_t = (1 - sigma) * z + sigma * noise
    with torch.no_grad():
        transformer.disable_adapters()
        v_cond, v_null = velocity_of(transformer, x_t, sigma, cond), velocity_of(transformer, x_t, sigma, null)
        transformer.enable_adapters()
        v_real = v_null + 3.0 * (v_cond - v_null)
        transformer.set_adapter("fake")
        v_fake = velocity_of(transformer, x_t, sigma, cond)
        transformer.set_adapter("default")
    pred_real, pred_fake = x_t - sigma * v_real, x_t - sigma * v_fake
    p_real, p_fake = z - pred_real, z - pred_fake
    grad = (p_real - p_fake) / p_real.abs().mean(dim=[1, 2, 3], keepdim=True)
    torch.testing.assert_close(loss.detach(), 0.5 * F.mse_loss(z, z - grad), rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(x0.grad, grad / grad.numel(), rtol=1e-4, atol=1e-8)


# ---------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny_sdxl_dir(tmp_path_factory):
    from tests.tiny_models import build_tiny_sdxl

    return build_tiny_sdxl(tmp_path_factory.mktemp("tiny-sdxl") / "pipe")


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["sd15", "sdxl"])
@pytest.mark.parametrize("method", ["flash", "lcm", "dmd2"])
def test_two_steps_train_export_and_reproduce_in_plain_diffusers(tmp_path, tiny_sd_dir, tiny_sdxl_dir,
                                                                 method, backbone):
    from diffusers import LCMScheduler

    from flash_exp.backbones import load_pipeline
    from flash_exp.export import load_backbone_config
    from flash_exp.train import train
    from flash_exp.training.samples import sample_images
    from flash_exp.training.student import load_run

    directory = tiny_sd_dir if backbone == "sd15" else tiny_sdxl_dir
    shard = write_shard(tmp_path / "a.tar", solid_samples(8))
    extra = ["method.dmd2.fake_updates=2"] if method == "dmd2" else []
    cfg = method_cfg(directory, backbone, f"method={method}", f"data.shards=[{shard}]", "trainer.max_steps=2",
                     *extra)
    run = tmp_path / "run"
    export_dir = train(cfg, run)

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2  # data batches, whatever the number of updates per batch
    keys = ckpt["state_dict"]
    assert any(".default." in k for k in keys)
    assert any(".fake." in k for k in keys) == (method == "dmd2")

    _, module, _ = load_run(run)
    pipe = load_pipeline(load_backbone_config(export_dir), export_dir, sampler="student")
    assert isinstance(pipe.scheduler, LCMScheduler)
    if method == "dmd2":  # DMD2's fixed timesteps
        pipe.scheduler.set_timesteps(4)
        assert pipe.scheduler.timesteps.tolist() == [999, 749, 499, 249]
    for nfe in (1, 4):
        reference = sample_images(module.backbone, PROMPTS, True, nfe, 0.0, seed=3, resolution=32)
        gens = [torch.Generator().manual_seed(3 + i) for i in range(len(PROMPTS))]
        plain = pipe(prompt=PROMPTS, num_inference_steps=nfe, guidance_scale=0.0, generator=gens,
                     height=32, width=32, output_type="pt").images
        assert (plain - reference).abs().max().item() <= 1e-5
    base = load_pipeline(load_backbone_config(export_dir), None, sampler="student")
    gens = [torch.Generator().manual_seed(3 + i) for i in range(len(PROMPTS))]
    teacher = base(prompt=PROMPTS, num_inference_steps=4, guidance_scale=0.0, generator=gens, height=32, width=32,
                   output_type="pt").images
    assert (teacher - reference).abs().max().item() > 1e-4  # the LoRA is applied


# ---------------------------------------------------------------------------------- leaderboard
def test_methods_panel_shows_each_methods_scores_and_costs(tmp_path):
    from types import SimpleNamespace

    from flash_exp.leaderboard.methods_panel import methods_panel

    rows = []
    for method, evals in (("flash", 17.5), ("dmd2", 0.4)):
        run = tmp_path / method
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text(f"method:\n  name: {method}\n")
        (run / "metrics.csv").write_text(f"step,cost/teacher_evals_per_batch,cost/wall_s\n9,{evals},12.0\n")
        rows += [SimpleNamespace(sampler="student", run=str(run), nfe=n, fid=10.0 * n, clip=0.25, label=method,
                                 guidance=0.0) for n in (1, 2, 4)]
    rows.append(SimpleNamespace(sampler="teacher", run="", nfe=25, fid=3.0, clip=0.3, label="teacher", guidance=5.0))
    header, body = methods_panel(rows)
    assert header[:5] == ["method", "run", "FID 1", "FID 2", "FID 4"]
    by_method = {r[0]: r for r in body}
    assert by_method["dmd2"][2:5] == ["10.000", "20.000", "40.000"]
    assert by_method["dmd2"][-2:] == ["0.40", "12"] and by_method["flash"][-2] == "17.50"
    assert "25 NFE" in by_method["teacher"][1]
    assert methods_panel([r for r in rows if "dmd2" not in r.run]) is None  # Flash alone: no panel


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lcm", "dmd2"])
def test_resume_ends_at_the_same_step_with_the_same_weights(tmp_path, tiny_sd_dir, method):
    from flash_exp.train import train

    shard = write_shard(tmp_path / "a.tar", solid_samples(8))

    def cfg(steps: int):
        return method_cfg(tiny_sd_dir, "sd15", f"method={method}", f"data.shards=[{shard}]",
                          f"trainer.max_steps={steps}", *(["method.dmd2.fake_updates=2"] if method == "dmd2" else []))

    train(cfg(4), tmp_path / "straight")
    train(cfg(2), tmp_path / "resumed")
    train(cfg(4), tmp_path / "resumed")
    a, b = (torch.load(tmp_path / r / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
            for r in ("straight", "resumed"))
    assert a["global_step"] == b["global_step"] == 4
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=1e-5, atol=1e-6)
