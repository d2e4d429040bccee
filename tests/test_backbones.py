"""The four teacher families on tiny models built from config and loaded through the local-directory path.

Fast tests check each family's conditioning against its own diffusers pipeline, the teacher/student
switch, the discriminator taps, the flow parametrisation, the LoRA parameter count of the full-size
UNets, and the no-network error. The slow ones train each family end to end in-process (every loss,
sample grids at 1, 2 and 4 steps, export) and reload the export the way a user does.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from flash_exp.training.samples import viewing_scale
from tests.conftest import REPO
from tests.fixtures_train import PROMPTS, TINY_OVERRIDES, backbone_cfg, train_overrides
from tests.fixtures_weights import parameters_read, storages

pytest_plugins = ["tests.fixtures_eval"]

FAMILY_OF = {"sd15": "sd", "sdxl": "sdxl", "pixart": "pixart", "sd3": "sd3", "sd35": "sd3"}


@pytest.fixture(scope="module")
def backbones(tiny_dir):
    """``backbones(name)``: a built backbone on the tiny pipeline (built once per module)."""
    from flash_exp.backbones import build_backbone

    cache = {}

    def get(name: str):
        if name not in cache:
            cache[name] = build_backbone(backbone_cfg(name, tiny_dir(name)).backbone)
        return cache[name]

    return get


def latents(b: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 4, 16, 16, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------ conditioning
def test_sdxl_condition_matches_the_pipeline_and_zero_null(backbones):
    bb = backbones("sdxl")
    cond = bb.encode_prompts(PROMPTS)
    embeds, _, pooled, _ = bb.pipeline(student=True).encode_prompt(
        PROMPTS, device=torch.device("cpu"), num_images_per_prompt=1, do_classifier_free_guidance=False)
    torch.testing.assert_close(cond.kwargs["encoder_hidden_states"], embeds)
    added = cond.kwargs["added_cond_kwargs"]
    torch.testing.assert_close(added["text_embeds"], pooled)
    assert embeds.shape[-1] == 32 + 32  # penultimate states of both encoders, concatenated
    assert added["time_ids"].tolist() == [[32.0, 32.0, 0.0, 0.0, 32.0, 32.0]] * 2  # (orig, crop, target)

    null = bb.null_condition(3)  # backbone.null_condition=zero, as the official SDXL code
    assert null.kwargs["encoder_hidden_states"].shape == (3, *embeds.shape[1:])
    assert null.kwargs["encoder_hidden_states"].abs().max() == 0
    assert null.kwargs["added_cond_kwargs"]["text_embeds"].abs().max() == 0
    assert null.kwargs["added_cond_kwargs"]["time_ids"].tolist() == [[32.0, 32.0, 0.0, 0.0, 32.0, 32.0]] * 3


def test_pixart_condition_has_mask_micro_conditioning_and_epsilon_channels(backbones):
    bb = backbones("pixart")
    cond = bb.encode_prompts(PROMPTS)
    embeds, mask, _, _ = bb.pipeline(student=True).encode_prompt(
        PROMPTS, do_classifier_free_guidance=False, device=torch.device("cpu"), clean_caption=False,
        max_sequence_length=120)
    torch.testing.assert_close(cond.kwargs["encoder_hidden_states"], embeds)
    assert torch.equal(cond.kwargs["encoder_attention_mask"], mask)
    assert embeds.shape[1] == 120 and mask.sum(1).tolist() == [4, 4]  # 3 words + </s>, rest masked
    added = cond.kwargs["added_cond_kwargs"]
    assert added["resolution"].tolist() == [[32.0, 32.0]] * 2 and added["aspect_ratio"].tolist() == [[1.0]] * 2

    null = bb.null_condition(2)  # empty prompt
    assert null.kwargs["encoder_attention_mask"].sum(1).tolist() == [1, 1]

    z, t = latents(), torch.tensor([400, 400])
    assert bb.transformer.config.out_channels == 8
    with torch.no_grad(), bb.adapter(False):
        eps = bb.denoise(z, t, cond)
        raw = bb.transformer(z, timestep=t, return_dict=False, **cond.kwargs)[0]
    assert eps.shape == z.shape
    torch.testing.assert_close(eps, raw[:, :4])  # learned sigma: epsilon first, variance dropped


def test_pixart_encodes_a_mixed_case_caption_as_its_pipeline_does(backbones):
    bb = backbones("pixart")
    mixed = ["A Red Circle", " a BLUE Square "]
    assert bb.tokenizer(mixed[:1]).input_ids != bb.tokenizer(["a red circle"]).input_ids  # the tokenizer keeps case
    cond = bb.encode_prompts(mixed)
    embeds, mask, _, _ = bb.pipeline(student=True).encode_prompt(
        mixed, do_classifier_free_guidance=False, device=torch.device("cpu"), clean_caption=False,
        max_sequence_length=120)
    torch.testing.assert_close(cond.kwargs["encoder_hidden_states"], embeds)
    assert torch.equal(cond.kwargs["encoder_attention_mask"], mask)


@pytest.mark.parametrize("name", ["sd3", "sd3_t5"])
def test_sd3_condition_is_the_pipelines_encode_prompt(tiny_dir, name):
    from diffusers import StableDiffusion3Pipeline

    from flash_exp.backbones import build_backbone

    bb = build_backbone(backbone_cfg(name, tiny_dir(name)).backbone)
    assert (bb.text_encoder_3 is not None) == (name == "sd3_t5")
    cond = bb.encode_prompts(PROMPTS)
    pipe = StableDiffusion3Pipeline.from_pretrained(
        tiny_dir(name), **type(bb).pipeline_load_kwargs(str(tiny_dir(name))))
    embeds, _, pooled, _ = pipe.encode_prompt(PROMPTS, None, None, do_classifier_free_guidance=False,
                                              device=torch.device("cpu"))
    torch.testing.assert_close(cond.kwargs["encoder_hidden_states"], embeds)
    torch.testing.assert_close(cond.kwargs["pooled_projections"], pooled)
    assert embeds.shape[1] == 16 + 256  # CLIP tokens, then the T5 tokens (zeros without T5)
    t5_part = embeds[:, 16:]
    assert (t5_part.abs().max() == 0) == (name == "sd3")
    null = bb.null_condition(2)  # the configured negative prompt
    negative = bb.encode_prompts([bb.cfg.negative_prompt])
    torch.testing.assert_close(null.kwargs["encoder_hidden_states"][1],
                               negative.kwargs["encoder_hidden_states"][0])


# ------------------------------------------------------------------------------------ denoiser, taps
@pytest.mark.parametrize("name", ["sdxl", "pixart", "sd3"])
def test_teacher_is_the_base_model_and_features_have_the_declared_shape(backbones, tiny_dir, name):
    bb = backbones(name)
    cfg = bb.cfg
    z, t = latents(), torch.tensor([300, 300])
    cond = bb.encode_prompts(PROMPTS)
    base = type(bb.base_denoiser).from_pretrained(tiny_dir(name), subfolder=bb.denoiser_attr)
    with torch.no_grad():
        for p in bb.trainable_parameters():  # make the LoRA do something
            p.add_(0.1 * torch.randn_like(p))
        with bb.adapter(False):
            teacher = bb.denoise(z, t, cond)
            teacher_read = parameters_read(lambda: bb.denoise(z, t, cond))
        with bb.adapter(True):
            student = bb.denoise(z, t, cond)
            student_read = parameters_read(lambda: bb.denoise(z, t, cond))
        original = type(bb)._forward_denoiser(_Shim(bb, base), z, t, cond)
    torch.testing.assert_close(teacher, original[:, :4], rtol=1e-5, atol=1e-5)
    assert (teacher - student).abs().max() > 1e-4
    # base weights live once: the teacher reads the very storages the student reads, less its LoRA
    lora = storages(bb.trainable_parameters())
    frozen = storages(p for p in bb.base_denoiser.parameters() if not p.requires_grad)
    assert student_read & lora and not teacher_read & lora
    assert teacher_read == student_read - lora and len(teacher_read) > 10 and teacher_read <= frozen

    from flash_exp.method.discriminator import DiscriminatorHead

    configured = cfg.discriminator.input
    for source in ("features", "output"):
        cfg.discriminator.input = source
        channels, side = bb.feature_shape()
        with torch.no_grad():
            feats = bb.teacher_features(z, t, cond)
        if source == "output":  # the teacher's prediction itself, as Flash PixArt / SD3 were trained
            torch.testing.assert_close(feats, teacher)
            assert (channels, side) == (z.shape[1], z.shape[-1])
        elif feats.ndim == 3:  # transformer tokens (B, side^2, C)
            assert feats.shape == (2, side * side, channels)
        else:
            assert feats.shape == (2, channels, side, side)
        head = DiscriminatorHead(cfg.discriminator.head, channels, side, list(cfg.discriminator.channels))
        assert head(feats).shape[0] == 2
    cfg.discriminator.input = configured


class _Shim:
    """The backbone's forward with another denoiser module in place (the LoRA-free base model)."""

    def __init__(self, bb, base):
        self._bb, self._base = bb, base

    def __getattr__(self, name):
        if name in ("unet", "transformer"):
            return self._base
        return getattr(self._bb, name)


def test_sd3_is_flow_matching_with_the_shifted_teacher_schedule(backbones):
    from diffusers import FlowMatchEulerDiscreteScheduler

    bb = backbones("sd3")
    assert bb.schedule.prediction == "flow"
    teacher = bb.make_scheduler("teacher")
    student = bb.make_scheduler("student")
    assert isinstance(teacher, FlowMatchEulerDiscreteScheduler) and teacher.config.shift == 3.0
    assert isinstance(student, FlowMatchEulerDiscreteScheduler) and student.config.shift == 3.0
    teacher.set_timesteps(8)
    assert float(teacher.timesteps[0]) == 1000.0  # index 0: pure noise
    s = teacher.timesteps[1] / 1000  # shifted: above the unshifted linspace value
    assert float(s) > 1 - (1 - 1e-3) / 7
    # x_t = (1 - s) x0 + s eps with s = t / 1000, the scheduler's own sigma
    x0, eps = latents(seed=1), latents(seed=2)
    t = teacher.timesteps[3].expand(2)
    x_t = bb.schedule.add_noise(x0, eps, t)
    torch.testing.assert_close(x_t, teacher.scale_noise(x0, teacher.timesteps[3:4], eps))


def test_flow_dmd_works_on_x0():
    """DMD for a velocity model: x0 = x_t - s v; the score difference in x0 is s (v_real - v_fake) (the
    official flash_sd3 forgot the sigma factor) and the normaliser is |x0_student - x0_real| (it used
    the velocity)."""
    from flash_exp.backbones.noise_schedule import NoiseSchedule
    from flash_exp.method.losses import dmd_loss

    schedule = NoiseSchedule("flow", None, 1000)
    x0, eps = latents(seed=3), latents(seed=4)
    t = torch.tensor([250.0, 800.0])
    x_t = schedule.add_noise(x0, eps, t)
    torch.testing.assert_close(schedule.to_x0(eps - x0, x_t, t), x0, rtol=1e-5, atol=1e-5)

    v_real, v_fake = latents(seed=5), latents(seed=6)
    x0_real, x0_fake = schedule.to_x0(v_real, x_t, t), schedule.to_x0(v_fake, x_t, t)
    s = (t / 1000).view(-1, 1, 1, 1)
    torch.testing.assert_close(x0_fake - x0_real, s * (v_real - v_fake), rtol=1e-5, atol=1e-5)

    student = x0.clone().requires_grad_(True)
    dmd_loss(student, x0_real, x0_fake).backward()
    weight = 1 / ((x0 - x0_real).abs().mean(dim=(1, 2, 3), keepdim=True) + 1e-5)
    expected = 2 * (x0_fake - x0_real) * weight / x0.numel()  # d/dx mse(x, x - g) = 2 g / N
    torch.testing.assert_close(student.grad, expected, rtol=1e-4, atol=1e-8)


def test_sd3_student_x0_is_the_official_flow_estimate(tiny_dir, backbones):
    """Official flash_sd3: student_output = x_t - v * sigma, sigma the teacher scheduler's at the start
    timestep, with no consistency scalings; the student's Euler sampler applies none either, so its last
    step (to sigma = 0) lands on that same x0."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from flash_exp.method import build_distiller

    bb = backbones("sd3")
    distiller = build_distiller(bb, backbone_cfg("sd3", tiny_dir("sd3")))
    cond = bb.encode_prompts(PROMPTS)
    teacher = FlowMatchEulerDiscreteScheduler.from_pretrained(tiny_dir("sd3"), subfolder="scheduler")
    teacher.set_timesteps(32)
    with torch.no_grad():
        for i, t in enumerate(teacher.timesteps):  # 1000 ... 8.9, where c_skip would be 3e-5
            x_t = latents(seed=20 + i)
            with bb.adapter(True):
                v = bb.denoise(x_t, t.expand(2), cond)
            torch.testing.assert_close(distiller.student_x0(x_t, t.expand(2), cond), x_t - v * teacher.sigmas[i],
                                       rtol=0, atol=1e-6)
        student = bb.make_scheduler("student")
        student.set_timesteps(4)
        t = student.timesteps[-1]
        x_t = latents(seed=60)
        with bb.adapter(True):
            v = bb.denoise(x_t, t.expand(2), cond)
        torch.testing.assert_close(student.step(v, t, x_t, return_dict=False)[0],
                                   distiller.student_x0(x_t, t.expand(2), cond), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("name", "dual_attention_layers"), [("sd35", (0,)), ("sd35_large", ())])
def test_sd35_lora_targets_each_name_layers_of_its_transformer(name, dual_attention_layers):
    """Each target of the config is, by peft's rule (the module's name or its last dotted part(s)), a Linear
    or Conv2d of an SD3.5-shaped transformer (QK RMS norm; Medium's dual attention blocks add ``attn2``),
    and the attention targets reach ``attn2`` too."""
    from diffusers import SD3Transformer2DModel

    from tests.conftest import compose

    targets = compose([f"backbone={name}"]).backbone.lora.targets
    transformer = SD3Transformer2DModel(
        sample_size=16, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=8, num_attention_heads=4,
        caption_projection_dim=32, joint_attention_dim=64, pooled_projection_dim=64, out_channels=4,
        pos_embed_max_size=16, qk_norm="rms_norm", dual_attention_layers=dual_attention_layers)
    layers = [n for n, m in transformer.named_modules() if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)]
    for target in targets:
        assert any(n == target or n.endswith(f".{target}") for n in layers), f"{target} names no layer of {name}"
    if dual_attention_layers:
        assert {"to_q", "to_k", "to_v", "to_out.0"} <= {n.split("attn2.")[1] for n in layers if ".attn2." in n}


def plain_sd3_pipeline(directory):
    """``StableDiffusion3Pipeline`` read from the saved tiny directory, as a user loads it (no T5 there)."""
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(directory, text_encoder_3=None, tokenizer_3=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("name", ["sd3", "sd35"])
def test_sd3_family_teacher_rollout_and_student_match_a_plain_diffusers_pipeline(tmp_path, tiny_dir, name):
    """Held out against stock diffusers on the saved tiny model (SD3.5: MMDiT-X, dual attention in block 0,
    QK RMS norm). The teacher's K-step rollout from pure noise with CFG ends where the pipeline ends from
    the same latents, condition and guidance; the export read by ``load_lora_weights`` attaches every
    module of its file and samples as the in-memory student does at 1 and 4 NFE."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from safetensors.torch import load_file

    from flash_exp.backbones import build_backbone
    from flash_exp.method import build_distiller
    from flash_exp.training.samples import sample_conditional

    cfg = backbone_cfg(name, tiny_dir(name))
    bb = build_backbone(cfg.backbone)
    distiller = build_distiller(bb, cfg)
    if name == "sd35":
        block = bb.base_denoiser.transformer_blocks[0]
        assert block.attn2 is not None and block.attn.norm_q is not None  # MMDiT-X from the saved config
    cond, null = bb.encode_prompts(PROMPTS), bb.null_condition(2)
    k, guidance = 4, 5.0
    x_t = latents(seed=11)
    ours = distiller.teacher_rollout(x_t, torch.zeros(2, dtype=torch.long), k, cond, null, torch.full((2,), guidance))

    pipe = plain_sd3_pipeline(tiny_dir(name))
    embeds = {"prompt_embeds": cond.kwargs["encoder_hidden_states"],
              "pooled_prompt_embeds": cond.kwargs["pooled_projections"],
              "negative_prompt_embeds": null.kwargs["encoder_hidden_states"],
              "negative_pooled_prompt_embeds": null.kwargs["pooled_projections"]}
    with torch.no_grad():
        plain = pipe(**embeds, latents=x_t.clone(), num_inference_steps=k, guidance_scale=guidance, height=32,
                     width=32, output_type="latent").images
    torch.testing.assert_close(pipe.scheduler.timesteps, distiller.teacher_timesteps(k))
    print(f"{name}: teacher rollout vs StableDiffusion3Pipeline, max |diff| {(plain - ours).abs().max():.2e}")
    assert (plain - ours).abs().max().item() <= 1e-4

    gen = torch.Generator().manual_seed(5)  # a non-trivial student: B = 0 at init would test nothing
    with torch.no_grad():
        for p in bb.trainable_parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    weights = bb.export(tmp_path / "export")
    in_file = {key.removeprefix("transformer.").split(".lora_")[0] for key in load_file(weights)}
    pipe.load_lora_weights(str(tmp_path / "export"))
    attached = {n for n, m in pipe.transformer.named_modules() if isinstance(m, BaseTunerLayer)}
    assert attached == in_file and len(attached) == bb.num_lora_layers()
    if name == "sd35":
        assert {"transformer_blocks.0.attn2.to_q", "transformer_blocks.0.attn2.to_out.0"} <= attached
    seeds = [3, 4]
    noise = torch.stack([torch.randn(4, 16, 16, generator=torch.Generator().manual_seed(s)) for s in seeds])
    for nfe in (1, 4):
        student = sample_conditional(bb, cond, null, (2, 4, 16, 16), True, nfe, 0.0, seed=3, noise_seeds=seeds)
        with torch.no_grad():
            plain = pipe(prompt_embeds=embeds["prompt_embeds"], pooled_prompt_embeds=embeds["pooled_prompt_embeds"],
                         latents=noise.clone(), num_inference_steps=nfe, guidance_scale=0.0, height=32, width=32,
                         output_type="pt").images
        print(f"{name}: student at {nfe} NFE vs the export in StableDiffusion3Pipeline, "
              f"max |diff| {(plain - student).abs().max():.2e}")
        assert (plain - student).abs().max().item() <= 1e-5
    teacher = sample_conditional(bb, cond, null, (2, 4, 16, 16), False, 4, 0.0, seed=3, noise_seeds=seeds)
    assert (teacher - student).abs().max().item() > 1e-3  # the LoRA changes the samples


@pytest.mark.parametrize("name", ["sd15", "sdxl", "pixart", "sd3"])
def test_dmd_timesteps_have_the_official_support(tiny_dir, backbones, name):
    """The official DMD draw over all its 1000 outcomes. flash (SD1.5, SDXL, PixArt):
    t = randint(0, num_train_timesteps), used as the timestep, so 0..999. flash_sd3:
    t = copy.timesteps[randint(0, num_train_timesteps)] with copy = deepcopy(the teacher scheduler) as
    built (1000 steps, the backbone's shift), so sigma = 1 is drawn and sigma = 0 never."""
    from copy import deepcopy

    from diffusers import FlowMatchEulerDiscreteScheduler

    from flash_exp.method import build_distiller

    distiller = build_distiller(backbones(name), backbone_cfg(name, tiny_dir(name)))
    if name == "sd3":
        copy = deepcopy(FlowMatchEulerDiscreteScheduler.from_pretrained(tiny_dir(name), subfolder="scheduler"))
        official = torch.stack([copy.timesteps[i] for i in range(copy.config.num_train_timesteps)])
    else:
        official = torch.arange(0, 1000)
    draws = distiller.dmd_timesteps(200_000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(draws.unique().double(), official.double().sort().values, rtol=0, atol=1e-3)


# ------------------------------------------------------------------------------------ LoRA count
def closed_form_lora_count(config: dict, rank: int) -> tuple[int, int]:
    """rank x (in + out) for to_q, to_k, to_v, to_out.0 of every attention of every transformer block.

    Self-attention maps C -> C four times; cross-attention has q and out C -> C and k, v from the text
    width. Blocks: CrossAttn down blocks (layers_per_block attentions), the mid block (one attention),
    CrossAttn up blocks (layers_per_block + 1 attentions), each attention with its number of layers.
    """
    channels = config["block_out_channels"]
    layers = config.get("transformer_layers_per_block", 1)
    layers = [layers] * len(channels) if isinstance(layers, int) else layers
    per_block = config["layers_per_block"]
    blocks: list[int] = []
    for i, kind in enumerate(config["down_block_types"]):
        if kind.startswith("CrossAttn"):
            blocks += [channels[i]] * (per_block * layers[i])
    blocks += [channels[-1]] * layers[-1]
    for i, kind in enumerate(config["up_block_types"]):
        if kind.startswith("CrossAttn"):
            blocks += [channels[::-1][i]] * ((per_block + 1) * layers[::-1][i])
    text = config["cross_attention_dim"]

    def block(c: int) -> int:
        self_attn = 4 * (c + c)
        cross_attn = (c + c) + 2 * (text + c) + (c + c)
        return self_attn + cross_attn

    return rank * sum(block(c) for c in blocks), 8 * len(blocks)


def test_lora_count_of_the_full_size_unets(capsys):
    from flash_exp.backbones.lora_count import MODELS, lora_parameter_count, main, unet_config

    for name, model in MODELS.items():  # the command's ranks are the configs' ranks
        assert OmegaConf.load(REPO / "conf" / "backbone" / f"{name}.yaml").backbone.lora.rank == model.rank

    sd15 = unet_config("sd15")
    assert closed_form_lora_count(sd15, 1) == (199_296, 128)
    assert lora_parameter_count(sd15, 128) == closed_form_lora_count(sd15, 128) == (25_509_888, 128)
    sdxl = unet_config("sdxl")
    assert lora_parameter_count(sdxl, 64) == closed_form_lora_count(sdxl, 64) == (92_897_280, 560)

    main([])
    out = capsys.readouterr().out
    assert "25,509,888" in out and "(25.5M)" in out
    assert "92,897,280" in out and "(92.9M)" in out


# ------------------------------------------------------------------------------------ no network
def test_resolve_pretrained_offline_names_the_hub_id(tmp_path, monkeypatch):
    from flash_exp.backbones.hub import TeacherNotFoundError, resolve_pretrained

    assert resolve_pretrained(str(tmp_path)) == str(tmp_path)
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))  # nothing cached
    start = time.monotonic()
    with pytest.raises(TeacherNotFoundError) as err:
        resolve_pretrained("stabilityai/stable-diffusion-xl-base-1.0")
    assert time.monotonic() - start < 5
    assert "'stabilityai/stable-diffusion-xl-base-1.0'" in str(err.value)
    assert "backbone.pretrained=DIR" in str(err.value)


def test_train_without_network_fails_fast_naming_the_hub_id(tmp_path):
    """No local directory, no cache, no reachable hub (a closed local port stands in for no network,
    also on machines that have one): the CLI exits 2 with the hub id and the local-directory hint."""
    shard = tmp_path / "unused.tar"
    shard.touch()
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9", FLASH_EXP_RUNS=str(tmp_path / "runs"))
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "flash_exp.train", "backbone=sdxl", f"data.shards=[{shard}]"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "could not load the teacher 'stabilityai/stable-diffusion-xl-base-1.0'" in proc.stderr
    assert "backbone.pretrained=DIR" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert elapsed < 60, f"took {elapsed:.1f}s"  # interpreter and imports included, on a loaded CI box


# ------------------------------------------------------------------------------------ end to end
def plain_sample(pipe, family: str, seed: int = 7, steps: int = 4) -> torch.Tensor:
    kwargs = {"use_resolution_binning": False} if family == "pixart" else {}
    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(PROMPTS))]
    return pipe(prompt=PROMPTS, num_inference_steps=steps, guidance_scale=0.0, generator=gens, height=32,
                width=32, output_type="pt", **kwargs).images


EXPORT_FILES = {"sd": "pytorch_lora_weights.safetensors", "sdxl": "pytorch_lora_weights.safetensors",
                "sd3": "pytorch_lora_weights.safetensors", "pixart": "adapter_model.safetensors"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sd15", "sdxl", "pixart", "sd3", "sd35"])
def test_train_export_and_reload_reproduce_the_student(tmp_path, tiny_dir, tiny_shards, name):
    from flash_exp.backbones import load_pipeline
    from flash_exp.backbones.common import lora_layers
    from flash_exp.train import train
    from flash_exp.training.module import FlashModule
    from flash_exp.training.samples import sample_images

    family = FAMILY_OF[name]
    cfg = backbone_cfg(name, tiny_dir(name), *train_overrides(tiny_shards, "trainer.max_steps=4"))
    run = tmp_path / "run"
    start = time.monotonic()
    export_dir = train(cfg, run)
    print(f"{name}: trained 4 steps, sampled and exported in {time.monotonic() - start:.1f}s")

    # every phase ran, the last with all three losses, and the discriminator trained
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    last = [r for r in rows if r.get("phase") == "3.0"]
    assert last, "phase 3 was not reached"
    for key in ("loss/distill", "loss/gan_generator", "loss/dmd", "loss/discriminator"):
        assert any(r.get(key) for r in last), f"{key} not logged in phase 3"
    # the sample grid: the student at 1, 2 and 4 steps, then the teacher
    grids = sorted((run / "samples").glob("step_*.png"))
    assert grids
    rows_txt = grids[-1].with_suffix(".txt").read_text()
    assert "student 1 NFE | student 2 NFE | student 4 NFE | teacher 2 steps" in rows_txt
    side = cfg.backbone.resolution * viewing_scale(cfg.backbone.resolution)  # small images enlarged to view
    columns = len(rows_txt.split("columns: ")[1].split("\n")[0].split(" | "))
    assert side >= 128 and Image.open(grids[-1]).size == (columns * (side + 2) + 2, 4 * (side + 2) + 2)
    # the export in the family's own format
    assert (export_dir / EXPORT_FILES[family]).is_file()
    if family == "pixart":
        adapter = json.loads((export_dir / "adapter_config.json").read_text())
        assert (adapter["r"], adapter["lora_alpha"]) == (4, 2)

    module = FlashModule(cfg)
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    module.load_state_dict(state, strict=False)
    student = sample_images(module.backbone, PROMPTS, True, 4, 0.0, seed=7, resolution=32)

    pipe = load_pipeline(cfg.backbone, export_dir, sampler="student")
    denoiser = pipe.transformer if family in ("pixart", "sd3") else pipe.unet
    assert len(lora_layers(denoiser)) == module.backbone.num_lora_layers() > 0
    plain = plain_sample(pipe, family)
    assert (plain - student).abs().max().item() <= 1e-4
    base = plain_sample(load_pipeline(cfg.backbone, None, sampler="student"), family)
    assert (base - student).abs().max().item() > 1e-3  # the LoRA is applied, not silently dropped


@pytest.mark.slow
def test_cli_trains_sdxl_from_a_local_directory(tmp_path, tiny_dir, tiny_shards):
    run = tmp_path / "run"
    args = ["backbone=sdxl", f"backbone.pretrained={tiny_dir('sdxl')}", "backbone.resolution=32",
            "backbone.lora.rank=4", "backbone.lora.alpha=4", "backbone.discriminator.head=generic", "backbone.discriminator.channels=[16,32]",
            "loss.distill.type=l2", "trainer.max_steps=2", "trainer.sample_nfe=[1,2]",
            *[o for o in train_overrides(tiny_shards) if not o.startswith(("trainer.sample_nfe", "data.prompts"))],
            f"hydra.run.dir={run}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "flash_exp.train", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"run directory: {run}" in proc.stdout
    assert (run / "export" / "pytorch_lora_weights.safetensors").is_file()
    assert sorted((run / "samples").glob("step_*.png"))


def assert_plain_sd3_pipeline_is_the_student(bb, directory, export_dir) -> None:
    """A plain ``StableDiffusion3Pipeline`` from the teacher's directory, with its own scheduler and the
    exported LoRA (``load_lora_weights``), lands at 1 NFE without CFG where our student's sampler lands."""
    from diffusers import StableDiffusion3Pipeline

    from flash_exp.backbones.common import lora_layers

    pipe = StableDiffusion3Pipeline.from_pretrained(directory, text_encoder_3=None, tokenizer_3=None)
    pipe.load_lora_weights(str(export_dir))
    pipe.set_progress_bar_config(disable=True)
    assert len(lora_layers(pipe.transformer)) == bb.num_lora_layers() > 0  # the LoRA attaches in full
    cond = bb.encode_prompts(PROMPTS)
    start = latents(2, seed=3)

    def one_step(student: bool) -> torch.Tensor:
        sched = bb.make_scheduler("student")
        sched.set_timesteps(1)
        t = sched.timesteps[0]
        with bb.adapter(student):
            return sched.step(bb.denoise(start, t.expand(2), cond), t, start, return_dict=False)[0]

    with torch.no_grad():
        x, teacher = one_step(True), one_step(False)
        plain = pipe(prompt_embeds=cond.kwargs["encoder_hidden_states"],
                     pooled_prompt_embeds=cond.kwargs["pooled_projections"], latents=start.clone(),
                     num_inference_steps=1, guidance_scale=0.0, height=32, width=32, output_type="latent").images
    diff = (plain - x).abs().max().item()
    print(f"student 1 NFE vs StableDiffusion3Pipeline + exported LoRA: max abs {diff:.2e}; "
          f"vs the teacher {(teacher - x).abs().max().item():.2e}")
    assert diff <= 1e-5
    assert (teacher - x).abs().max().item() > 0  # the trained LoRA changes the output


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sd3", "sd35"])
@pytest.mark.parametrize("method", ["flash", "dmd2"])
def test_cli_trains_the_sd3_family_exports_evaluates_on_the_toy_benchmark_and_resumes_bit_exactly(
        tmp_path, tiny_dir, tiny_shards, toy_clip_dir, toy_shards, name, method):
    """``python -m flash_exp.train backbone=<name> method=<method> backbone.pretrained=<tiny>
    trainer.max_steps=2``: the export, which a plain ``StableDiffusion3Pipeline`` loads to the student at
    1 NFE, the toy benchmark's result of the student at 1 NFE, and a relaunch to 4 steps that ends with
    the weights of a run trained 4 steps straight, bit for bit."""
    methods = [f"method={method}", *(["method.dmd2.fake_updates=2"] if method == "dmd2" else [])]

    def cli(run, steps: int, *extra: str) -> None:
        args = [f"backbone={name}", f"backbone.pretrained={tiny_dir(name)}", "backbone.resolution=32",
                "backbone.lora.rank=4", "backbone.lora.alpha=2", "backbone.discriminator.head=generic",
                "backbone.discriminator.channels=[16,32]", "loss.distill.type=l2", *TINY_OVERRIDES[name],
                *train_overrides(tiny_shards, f"trainer.max_steps={steps}", "trainer.checkpoint_every=2",
                                 "trainer.sample_nfe=[1]", "trainer.num_sample_prompts=1"),
                *methods, *extra, f"hydra.run.dir={run}"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, "-m", "flash_exp.train", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]

    from flash_exp.metrics.results import read_json, result_path
    from flash_exp.training.student import load_run

    evaluation = ["eval.after_train=true", "+eval.settings.device=cpu", "+eval.settings.batch_size=4",
                  "+eval.settings.student_nfe=[1]", "+eval.settings.teacher_nfe=[]",
                  "+eval.settings.teacher_full=false", f"+eval.settings.toy_clip_dir={toy_clip_dir}",
                  f"+eval.settings.cache_dir={tmp_path / 'cache'}", "+eval.options.toy.num_images=4",
                  f"+eval.options.toy.toy.shards=[{','.join(toy_shards)}]"]
    resumed, straight = tmp_path / "resumed", tmp_path / "straight"
    cli(resumed, 2, *evaluation)
    assert (resumed / "export" / "pytorch_lora_weights.safetensors").is_file()
    result = read_json(result_path(resumed, "toy", "student_nfe1"))
    assert result is not None and result["num_images"] == 4 and result["fid"] >= 0.0
    assert json.loads((resumed / "export" / "recipe.json").read_text())["family"] == "sd3"
    saved = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert any(".fake." in k for k in saved) == (method == "dmd2")  # DMD2's fake score trains beside the student
    _, student, _ = load_run(resumed)
    assert_plain_sd3_pipeline_is_the_student(student.backbone, tiny_dir(name), resumed / "export")
    cli(resumed, 4)
    cli(straight, 4)
    a, b = (torch.load(r / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
            for r in (straight, resumed))
    assert a["global_step"] == b["global_step"] == 4
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


@pytest.mark.parametrize("name", ["sd15", "sdxl", "pixart", "sd3"])
def test_bfloat16_with_gradient_checkpointing_trains_the_lora_in_float32(tiny_dir, name):
    """Base weights in bfloat16, LoRA in float32, gradient checkpointing on: one generator step with
    every loss (phase 3) and one discriminator step give finite gradients on the LoRA. (The teacher's
    feature pass for the GAN loss needs gradients with the LoRA off; checkpointing would recompute it
    with the LoRA on, so it runs without checkpointing.)"""
    from flash_exp.backbones import build_backbone
    from flash_exp.method import build_distiller

    cfg = backbone_cfg(name, tiny_dir(name), "backbone.dtype=bfloat16", "backbone.gradient_checkpointing=true",
                       "phases.k=[4,4,4,4]", "phases.iterations=[1,1,1,1]")
    bb = build_backbone(cfg.backbone)
    assert bb.base_denoiser.is_gradient_checkpointing
    lora = bb.trainable_parameters()
    assert lora and all(p.dtype == torch.float32 for p in lora)
    assert {p.dtype for p in bb.parameters() if not p.requires_grad} == {torch.bfloat16}
    assert bb.compute_vae() is bb.vae  # only a float16 VAE with force_upcast runs as a float32 copy
    bb.train()
    distiller = build_distiller(bb, cfg)
    gen = torch.Generator().manual_seed(0)
    z = bb.encode_images(torch.rand(2, 3, 32, 32) * 2 - 1)
    loss, logs, disc_inputs = distiller.generator_loss(z, bb.encode_prompts(PROMPTS), bb.null_condition(2), 3, gen)
    assert {"loss/distill", "loss/gan_generator", "loss/dmd"} <= set(logs)
    loss.backward()
    grads = [p.grad for p in lora]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().max() > 0 for g in grads)
    d_loss, _ = distiller.discriminator_loss(disc_inputs)
    d_loss.backward()
    assert all(p.grad is not None for p in distiller.discriminator.parameters())
    # GAN levels 10/250/500/750 on the unshifted grid; SD3's shift 3 reads them as 3s / (1 + 2s)
    levels = [10, 250, 500, 750] if name != "sd3" else [1000 * 3 * s / (1 + 2 * s) for s in (0.01, 0.25, 0.5, 0.75)]
    assert all(min(abs(float(t) - lv) for lv in levels) < 1e-2 for t in disc_inputs.t)
