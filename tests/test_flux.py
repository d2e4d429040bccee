"""FLUX.1 on tiny ``FluxTransformer2DModel`` pipelines saved with ``save_pretrained`` and loaded through the
local-directory path: text conditioning, the resolution-dependent shift, the guidance embedding (one
call) against true CFG (two calls), and held-out checks against a plain ``FluxPipeline``: the teacher's
K-step rollout, and the exported LoRA against the in-memory student."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.fixtures_train import PROMPTS, backbone_cfg

pytest_plugins = ["tests.fixtures_eval"]

TINY = {"flux": "flux", "flux_schnell": "flux_schnell"}  # guidance embedding / none (true CFG)


@pytest.fixture(scope="module")
def flux(tiny_dir):
    """``flux(name)``: (backbone, directory) on the tiny pipeline ``name`` (built once per module)."""
    from flash_exp.backbones import build_backbone

    cache = {}

    def get(name: str):
        if name not in cache:
            directory = tiny_dir(name)
            cache[name] = build_backbone(backbone_cfg("flux", directory).backbone), directory
        return cache[name]

    return get


def plain_pipeline(directory, lora_dir=None):
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(directory, torch_dtype=torch.float32)
    if lora_dir is not None:
        pipe.load_lora_weights(str(lora_dir), adapter_name="flash")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pack(z: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h/2 * w/2, 4C), 2x2 patches row-major, channels then patch row then column."""
    b, c, h, w = z.shape
    return z.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), 4 * c)


def unpack(x: torch.Tensor, c: int, h: int, w: int) -> torch.Tensor:
    b = x.shape[0]
    return x.reshape(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def noise(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_flux_condition_is_the_pipelines_t5_tokens_and_clip_pooled_output(flux):
    bb, directory = flux("flux")
    cond = bb.encode_prompts(PROMPTS)
    pipe = plain_pipeline(directory)
    embeds, pooled, text_ids = pipe.encode_prompt(PROMPTS, None, device=torch.device("cpu"), max_sequence_length=512)
    # the same encoders in another module instance: equal up to float32 summation order
    torch.testing.assert_close(cond.kwargs["encoder_hidden_states"], embeds, rtol=0, atol=1e-4)
    torch.testing.assert_close(cond.kwargs["pooled_projections"], pooled, rtol=0, atol=1e-4)
    assert embeds.shape == (2, 512, 32) and pooled.shape == (2, 32) and not text_ids.any()
    tokens = pipe.tokenizer(PROMPTS, padding="max_length", max_length=16, return_tensors="pt").input_ids
    torch.testing.assert_close(pooled, pipe.text_encoder(tokens).pooler_output)


def test_flux_schedule_shifts_with_the_image_sequence_length(flux):
    """mu = 0.5 + (1.15 - 0.5) (L - 256) / (4096 - 256) for L packed tokens (calculate_shift's line), and
    sigma = e^mu / (e^mu + 1/s - 1) on s = linspace(1, 1/K, K), as FluxPipeline sets its scheduler."""
    bb, _ = flux("flux")
    seq = (32 // 2 // 2) ** 2  # 32 px, VAE factor 2, 2x2 packing: 64 tokens
    mu = 0.5 + (1.15 - 0.5) * (seq - 256) / (4096 - 256)
    assert bb.mu == pytest.approx(mu, abs=1e-12)
    teacher = bb.make_scheduler("teacher")
    teacher.set_timesteps(8)
    s = np.linspace(1.0, 1 / 8, 8)
    expected = math.exp(mu) / (math.exp(mu) + 1 / s - 1)
    np.testing.assert_allclose(teacher.sigmas[:-1].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(teacher.timesteps.numpy(), expected * 1000, rtol=1e-5)
    # the GAN levels and DMD draws read on the same shift: e^mu s / (1 + (e^mu - 1) s)
    t = torch.tensor([10.0, 250.0, 500.0, 750.0])
    k = math.exp(mu)
    np.testing.assert_allclose(bb.schedule.shift_timesteps(t).numpy(),
                               [1000 * k * v / (1 + (k - 1) * v) for v in (0.01, 0.25, 0.5, 0.75)], rtol=1e-5)
    # the 1024 px FLUX.1-dev resolution: 4096 tokens, mu = 1.15
    assert bb.mu != pytest.approx(1.15)
    from flash_exp.backbones.flux import sequence_shift

    assert sequence_shift(dict(bb.base_scheduler_config), (1024 // 8 // 2) ** 2) == pytest.approx(1.15)


def test_flux_denoiser_packs_the_latents_with_the_pipelines_image_ids(flux):
    """Our velocity at (B, C, h, w) latents equals the transformer on 2x2-packed latents (packing written
    out here) with row/column image ids and zero text ids, unpacked; timestep t / 1000."""
    bb, _ = flux("flux")
    cond = bb.encode_prompts(PROMPTS)
    z, t = noise(1), torch.tensor([700.0, 700.0])
    ids = torch.stack(torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij"), -1).reshape(64, 2)
    img_ids = torch.cat([torch.zeros(64, 1), ids], dim=1)
    with torch.no_grad(), bb.adapter(False):
        ours = bb.denoise(z, t, bb.with_guidance(cond, 2.5))
        raw = bb.transformer(hidden_states=pack(z), timestep=t / 1000, guidance=torch.full((2,), 2.5),
                             encoder_hidden_states=cond.kwargs["encoder_hidden_states"],
                             pooled_projections=cond.kwargs["pooled_projections"], txt_ids=torch.zeros(512, 3),
                             img_ids=img_ids, return_dict=False)[0]
    torch.testing.assert_close(ours, unpack(raw, 4, 16, 16), rtol=0, atol=0)


def test_flux_student_x0_is_the_flow_estimate_its_euler_sampler_lands_on(flux):
    """x0 = x_t - sigma v with sigma = t / 1000 of the shifted schedule, no consistency scalings; the
    student's last Euler step (to sigma = 0) lands on that same x0."""
    from flash_exp.method import build_distiller

    bb, directory = flux("flux")
    distiller = build_distiller(bb, backbone_cfg("flux", directory))
    cond = bb.encode_prompts(PROMPTS)
    student = bb.make_scheduler("student")
    student.set_timesteps(4)
    with torch.no_grad():
        for i, t in enumerate(student.timesteps):
            x_t = noise(30 + i)
            with bb.adapter(True):
                v = bb.denoise(x_t, t.expand(2), cond)
            torch.testing.assert_close(distiller.student_x0(x_t, t.expand(2), cond), x_t - student.sigmas[i] * v,
                                       rtol=0, atol=1e-6)
        t = student.timesteps[-1]
        x_t = noise(40)
        with bb.adapter(True):
            v = bb.denoise(x_t, t.expand(2), cond)
        torch.testing.assert_close(student.step(v, t, x_t, return_dict=False)[0],
                                   distiller.student_x0(x_t, t.expand(2), cond), rtol=0, atol=1e-6)


def test_flux_discriminator_reads_the_teacher_output_or_the_image_tokens(flux):
    """input=output: the teacher's unpacked velocity (C, h, w); input=features: a double-stream block's
    image tokens, one per packed 2x2 patch, (B, h/2 * w/2, inner dim). The generic head takes both on the
    tiny model; at 1024 px the configured strided head reads 16 x 128 x 128 into 25 patch logits."""
    from flash_exp.method.discriminator import DiscriminatorHead

    bb, _ = flux("flux")
    cfg = bb.cfg
    cond = bb.encode_prompts(PROMPTS)
    z, t = noise(4), torch.tensor([400.0, 400.0])
    try:
        for source in ("output", "features"):
            cfg.discriminator.input = source
            channels, side = bb.feature_shape()
            with torch.no_grad():
                feats = bb.teacher_features(z, t, cond)
            if source == "output":
                with bb.adapter(False):
                    torch.testing.assert_close(feats, bb.denoise(z, t, cond))
                assert (channels, side) == (4, 16)
            else:
                assert (channels, side) == (2 * 16, 8) and feats.shape == (2, 8 * 8, 32)
            head = DiscriminatorHead("generic", channels, side, [16, 32])
            assert head(feats).shape[0] == 2
    finally:
        cfg.discriminator.input = "output"
    full = DiscriminatorHead("flash_strided", 16, 128, [64, 128, 256, 512])
    assert full(torch.randn(1, 16, 128, 128)).shape == (1, 25)


def test_bfloat16_with_gradient_checkpointing_trains_the_flux_lora_in_float32(tiny_dir):
    """Base weights in bfloat16, LoRA in float32, checkpointing on: a phase-3 generator step (distillation,
    GAN, DMD) and a discriminator step give finite LoRA gradients; the GAN levels 10/250/500/750 are read
    through the shift e^mu s / (1 + (e^mu - 1) s)."""
    from flash_exp.backbones import build_backbone
    from flash_exp.method import build_distiller

    cfg = backbone_cfg("flux", tiny_dir("flux"), "backbone.dtype=bfloat16", "backbone.gradient_checkpointing=true",
                       "phases.k=[4,4,4,4]", "phases.iterations=[1,1,1,1]")
    bb = build_backbone(cfg.backbone)
    lora = bb.trainable_parameters()
    assert lora and all(p.dtype == torch.float32 for p in lora)
    assert {p.dtype for p in bb.parameters() if not p.requires_grad} == {torch.bfloat16}
    bb.train()
    distiller = build_distiller(bb, cfg)
    z = bb.encode_images(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert z.shape == (2, 4, 16, 16)
    loss, logs, disc_inputs = distiller.generator_loss(z, bb.encode_prompts(PROMPTS), bb.null_condition(2), 3,
                                                       torch.Generator().manual_seed(0))
    assert {"loss/distill", "loss/gan_generator", "loss/dmd"} <= set(logs)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in lora)
    assert any(p.grad.abs().max() > 0 for p in lora)
    distiller.discriminator_loss(disc_inputs)[0].backward()
    k = math.exp(bb.mu)
    levels = [1000 * k * s / (1 + (k - 1) * s) for s in (0.01, 0.25, 0.5, 0.75)]
    assert all(min(abs(float(t) - lv) for lv in levels) < 1e-2 for t in disc_inputs.t)


@pytest.mark.parametrize("name", ["flux", "flux_schnell"])
def test_held_out_pipeline_ends_where_the_teacher_rollout_ends(flux, name):
    """A plain FluxPipeline from the saved tiny model, started from our latents (packed), with our K and
    guidance, lands where our K-step teacher rollout lands. FLUX.1-dev's shape: guidance_scale=w is the
    embedding, one teacher call per step; without the embedding: true CFG (true_cfg_scale=w with the
    empty prompt), two calls per step."""
    from flash_exp.method import build_distiller

    bb, directory = flux(name)
    distiller = build_distiller(bb, backbone_cfg("flux", directory))
    cond, null = bb.encode_prompts(PROMPTS), bb.null_condition(2)
    k, w, x_t = 6, 3.0, noise(2)
    before = bb.teacher_samples
    ours = distiller.teacher_rollout(x_t, torch.zeros(2, dtype=torch.long), k, cond, null, torch.full((2,), w))
    calls = (bb.teacher_samples - before) // 2
    assert calls == (k if name == "flux" else 2 * k)
    pipe = plain_pipeline(directory)
    kwargs = {"guidance_scale": w} if name == "flux" else {"true_cfg_scale": w, "negative_prompt": ""}
    with torch.no_grad():
        if name == "flux_schnell":
            kwargs.update(negative_prompt_embeds=null.kwargs["encoder_hidden_states"],
                          negative_pooled_prompt_embeds=null.kwargs["pooled_projections"])
            del kwargs["negative_prompt"]
        packed = pipe(prompt_embeds=cond.kwargs["encoder_hidden_states"],
                      pooled_prompt_embeds=cond.kwargs["pooled_projections"], latents=pack(x_t),
                      num_inference_steps=k, height=32, width=32, output_type="latent", **kwargs).images
    diff = (unpack(packed, 4, 16, 16) - ours).abs().max().item()
    print(f"{name}: teacher rollout vs FluxPipeline, K={k}, w={w}: max abs {diff:.2e}")
    assert diff <= 1e-4
    if name == "flux":  # the embedding matters: another w ends elsewhere
        other = distiller.teacher_rollout(x_t, torch.zeros(2, dtype=torch.long), k, cond, null, torch.full((2,), 1.0))
        assert (other - ours).abs().max() > 1e-3


def test_exported_lora_in_flux_pipeline_is_the_in_memory_student(flux, tmp_path):
    from flash_exp.backbones.common import lora_layers
    from flash_exp.backbones.lora_files import lora_file_modules

    bb, directory = flux("flux")
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in bb.trainable_parameters():  # a student that differs from the teacher
            p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    path = bb.export(tmp_path / "export")
    pipe = plain_pipeline(directory, tmp_path / "export")
    attached = {n for n, m in pipe.transformer.named_modules() if m in set(lora_layers(pipe.transformer))}
    in_file = lora_file_modules(path)
    assert len(attached) == len(in_file) == bb.num_lora_layers() > 0
    cond = bb.encode_prompts(PROMPTS)
    for nfe in (1, 4):
        x = noise(3)
        sched = bb.make_scheduler("student")
        sched.set_timesteps(nfe)
        with torch.no_grad(), bb.adapter(True):
            for t in sched.timesteps:
                x = sched.step(bb.denoise(x, t.expand(2), cond), t, x, return_dict=False)[0]
            packed = pipe(prompt_embeds=cond.kwargs["encoder_hidden_states"],
                          pooled_prompt_embeds=cond.kwargs["pooled_projections"], latents=pack(noise(3)),
                          num_inference_steps=nfe, height=32, width=32, guidance_scale=bb.cfg.student_guidance,
                          output_type="latent").images
        diff = (unpack(packed, 4, 16, 16) - x).abs().max().item()
        print(f"student {nfe} NFE vs FluxPipeline + exported LoRA: max abs {diff:.2e}")
        assert diff <= 1e-5
    base = plain_pipeline(directory)
    with torch.no_grad():
        teacher = base(prompt_embeds=cond.kwargs["encoder_hidden_states"],
                       pooled_prompt_embeds=cond.kwargs["pooled_projections"], latents=pack(noise(3)), num_inference_steps=4, height=32, width=32,
                       guidance_scale=bb.cfg.student_guidance, output_type="latent").images
    assert (unpack(teacher, 4, 16, 16) - x).abs().max() > 1e-3  # the LoRA is applied


# ---------------------------------------------------------------------------------- end to end
def flux_train_args(directory, shards: list[str], *extra: str) -> list[str]:
    from tests.fixtures_train import TINY_OVERRIDES, train_overrides

    return ["backbone=flux", f"backbone.pretrained={directory}", "backbone.resolution=32", "backbone.lora.rank=4",
            "backbone.lora.alpha=2", "backbone.discriminator.head=generic", "backbone.discriminator.channels=[16,32]",
            "loss.distill.type=l2", *TINY_OVERRIDES["flux"], *train_overrides(shards),
            *extra]


def toy_evaluation(clip_dir, heldout: list[str], cache) -> list[str]:
    """The toy benchmark on 4 images of the student at 1 NFE, scored by a random toy CLIP."""
    return ["eval.after_train=true", "+eval.settings.device=cpu", "+eval.settings.batch_size=4",
            "+eval.settings.student_nfe=[1]", "+eval.settings.teacher_nfe=[]", "+eval.settings.teacher_full=false",
            f"+eval.settings.toy_clip_dir={clip_dir}", f"+eval.settings.cache_dir={cache}",
            "+eval.options.toy.num_images=4", f"+eval.options.toy.toy.shards=[{','.join(heldout)}]"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["flash", "dmd2"])
def test_cli_trains_flux_two_steps_exports_evaluates_and_resumes_bit_exactly(tmp_path, tiny_dir, tiny_shards,
                                                                             toy_clip_dir, toy_shards, method):
    """``python -m flash_exp.train backbone=flux method=<method> ... trainer.max_steps=2``: the export, which
    a plain ``FluxPipeline`` loads to the student at 1 NFE (at its guidance input), the toy benchmark's
    result, and a run resumed after 1 step that ends with the weights of a run trained 2 steps straight."""
    import json
    import os
    import subprocess
    import sys

    from omegaconf import OmegaConf

    from flash_exp.config import validate
    from flash_exp.train import train
    from flash_exp.training.student import load_run
    from tests.conftest import REPO, compose

    directory = tiny_dir("flux")
    run = tmp_path / "cli"
    methods = [f"method={method}", *(["method.dmd2.fake_updates=2"] if method == "dmd2" else [])]
    args = [*flux_train_args(directory, tiny_shards, "trainer.max_steps=2", *methods),
            *toy_evaluation(toy_clip_dir, toy_shards, tmp_path / "cache"), f"hydra.run.dir={run}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "flash_exp.train", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "export" / "pytorch_lora_weights.safetensors").is_file()
    complete = json.loads((run / "COMPLETE").read_text())
    assert complete["steps"] == 2 and "eval/toy/student_nfe1.json" in complete["results"]
    result = json.loads((run / "eval" / "toy" / "student_nfe1.json").read_text())
    assert result["guidance"] == 3.5 and result["model"]["family"] == "flux"  # the student at its guidance input
    print("toy evaluation:", {k: result[k] for k in ("fid", "clip_score", "images_generated")})
    saved = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert any(".fake." in k for k in saved) == (method == "dmd2")  # DMD2's fake score trains beside the student
    _, student, _ = load_run(run)
    bb = student.backbone
    pipe = plain_pipeline(directory, run / "export")
    cond = bb.encode_prompts(PROMPTS)

    def one_step(student: bool) -> torch.Tensor:
        sched = bb.make_scheduler("student")
        sched.set_timesteps(1)
        t = sched.timesteps[0]
        with bb.adapter(student):
            return sched.step(bb.denoise(noise(3), t.expand(2), cond), t, noise(3), return_dict=False)[0]

    with torch.no_grad():
        ours, teacher = one_step(True), one_step(False)
        packed = pipe(prompt_embeds=cond.kwargs["encoder_hidden_states"],
                      pooled_prompt_embeds=cond.kwargs["pooled_projections"], latents=pack(noise(3)),
                      num_inference_steps=1, height=32, width=32, guidance_scale=bb.cfg.student_guidance,
                      output_type="latent").images
    diff = (unpack(packed, 4, 16, 16) - ours).abs().max().item()
    print(f"{method}: student 1 NFE vs FluxPipeline + exported LoRA: max abs {diff:.2e}; "
          f"vs the teacher {(teacher - ours).abs().max().item():.2e}")
    assert diff <= 1e-5
    assert (teacher - ours).abs().max().item() > 0  # the trained LoRA changes the output

    def cfg(steps: int):
        return validate(compose(flux_train_args(directory, tiny_shards, f"trainer.max_steps={steps}",
                                                "trainer.checkpoint_every=1", *methods)))

    train(cfg(2), tmp_path / "straight")
    train(cfg(1), tmp_path / "resumed")
    train(cfg(2), tmp_path / "resumed")
    a, b = (torch.load(tmp_path / r / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
            for r in ("straight", "resumed"))
    assert a["global_step"] == b["global_step"] == 2
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert OmegaConf.select(OmegaConf.load(run / ".hydra" / "config.yaml"), "backbone.family") == "flux"


def test_flux_refuses_lcm_naming_the_backbone_and_family_and_takes_dmd2():
    from flash_exp.config import ConfigError, validate
    from tests.conftest import compose

    with pytest.raises(ConfigError, match=r"method='lcm'.*not 'flux' \(family flux\).*use method=flash or method=dmd2"):
        validate(compose(["backbone=flux", "method=lcm", "data.shards=[x]"]))
    cfg = validate(compose(["backbone=flux", "method=dmd2", "data.shards=[x]"]))
    assert cfg.backbone.student_scheduler.name == "FlowMatchEulerDiscreteScheduler"


# ---------------------------------------------------------------------------------- config, prefetch, plan
def test_flux_config_is_flux1_dev_with_its_guidance_embedding_at_3_5():
    from flash_exp.config import validate
    from tests.conftest import compose

    cfg = validate(compose(["backbone=flux", "data.shards=[x]"]))
    b = cfg.backbone
    assert (b.family, b.pretrained, b.prediction, b.resolution) == ("flux", "black-forest-labs/FLUX.1-dev", "flow", 1024)
    assert list(b.guidance_range) == [3.5, 3.5] and b.student_guidance == 3.5 == b.teacher_sampling.guidance
    assert (b.discriminator.input, b.discriminator.head) == ("output", "flash_strided")


def test_flux_lora_targets_exist_in_the_full_size_transformer():
    """Every configured target names linears of the FLUX.1-dev transformer (built on the meta device from
    its published config: 19 double-stream and 38 single-stream blocks)."""
    from diffusers import FluxTransformer2DModel

    from flash_exp.config import validate
    from tests.conftest import compose

    targets = validate(compose(["backbone=flux", "data.shards=[x]"])).backbone.lora.targets
    with torch.device("meta"):
        model = FluxTransformer2DModel(num_layers=19, num_single_layers=38, guidance_embeds=True)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(11.9e9, rel=0.01)
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    for target in targets:
        assert any(n == target or n.endswith("." + target) for n in names), target


def test_prefetch_lists_flux_dev_and_says_it_is_gated(tmp_path, capsys):
    from flash_exp.config import compose_train_config
    from flash_exp.prefetch import main, plan

    items, _ = plan(compose_train_config(["backbone=flux"]))
    assert (items[0].what, items[0].name) == ("teacher", "black-forest-labs/FLUX.1-dev")
    assert main(["--dry-run", "--cache", str(tmp_path), "backbone=flux"]) == 0
    out = capsys.readouterr().out
    assert "black-forest-labs/FLUX.1-dev is gated" in out and "hf auth login" in out


def test_offline_error_names_flux_dev_and_its_gate(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from flash_exp.backbones.hub import TeacherNotFoundError, resolve_pretrained

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(TeacherNotFoundError) as err:
        resolve_pretrained("black-forest-labs/FLUX.1-dev")
    assert "backbone.pretrained=DIR" in str(err.value) and "FLUX.1-dev is gated" in str(err.value)
    with pytest.raises(TeacherNotFoundError) as err:
        resolve_pretrained("black-forest-labs/FLUX.1-schnell")
    assert "gated" not in str(err.value)


def test_plan_prints_flux_gpu_hours_as_estimates(capsys):
    """One guided teacher call of FLUX.1-dev is one evaluation (the guidance embedding), not two (CFG)."""
    from flash_exp.config import validate
    from flash_exp.method.cost import expected_rollout_steps
    from flash_exp.plan import main
    from tests.conftest import compose

    assert main(["backbone=flux"]) == 0
    out = capsys.readouterr().out
    assert "GPU-h" in out and "estimate (not measured)" in out and "125 TFLOP per denoiser forward at 1024 px" in out
    cfg = validate(compose(["backbone=flux", "data.shards=[x]"]))
    first = out.splitlines()[1].split()
    # phase 0: the rollout's E[K - i] calls of B samples, plus the discriminator's two feature passes
    assert float(first[6].split("/")[0]) == pytest.approx(1 * expected_rollout_steps(cfg, 0) + 2, abs=0.05)


def test_full_size_flux_architecture_has_the_published_sizes():
    """The shipped FLUX.1-dev configs, counted on the meta device: the 11.9B transformer, the 16-channel
    VAE (84M), CLIP-L (123M) and T5-XXL shortened to one block; the scheduler's dynamic shift gives
    mu = 1.15 at 1024 px."""
    from flash_exp.backbones.flux import sequence_shift
    from flash_exp.bench.architectures import model_specs, parameter_count, pipelines

    sizes = {s.attr: parameter_count(s) for s in model_specs("flux")}
    assert sizes["transformer"] == pytest.approx(11.9e9, rel=0.005)
    assert sizes["vae"] == pytest.approx(83.8e6, rel=0.005)
    assert sizes["text_encoder"] == pytest.approx(123.1e6, rel=0.005)
    assert [s.layers for s in model_specs("flux") if s.attr == "text_encoder_2"] == [1]
    scheduler = pipelines()["flux"]["scheduler"][1]
    assert scheduler["use_dynamic_shifting"] and sequence_shift(scheduler, (1024 // 8 // 2) ** 2) == pytest.approx(1.15)
