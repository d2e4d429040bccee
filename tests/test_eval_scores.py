"""KID, precision/recall/density/coverage, the noise rule and the draws' prompts, against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cleanfid.fid import kernel_distance
from prdc import compute_prdc
from torchmetrics.image.kid import poly_mmd

from flash_exp.config import ConfigError
from flash_exp.metrics import precision_recall
from flash_exp.metrics.draws import summarise_draws
from flash_exp.metrics.kid import kernel_inception_distance
from flash_exp.metrics.noise import image_noise_seed, image_noise_seeds, kid_subset_seed
from flash_exp.metrics.precision_recall import nearest_neighbour_radii, precision_recall_density_coverage
from flash_exp.metrics.prompts import PromptSet
from flash_exp.metrics.spec import (
    SamplerSetting,
    ScoreSettings,
    eval_spec,
    protocol_spec,
    sampler_spec,
    spec_hash,
)


def features(n: int, d: int = 16, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(shift, 1.0 + shift, size=(n, d))


def test_kid_on_one_subset_of_every_feature_is_clean_fid_kernel_distance_and_the_unbiased_mmd():
    x, y = features(40, shift=0.3, seed=1), features(40, seed=2)  # generated, reference
    n, d = x.shape
    ours = kernel_inception_distance(x, y, num_subsets=1, max_subset_size=n, seed=5)
    assert ours.mean == pytest.approx(kernel_distance(x, y, num_subsets=1, max_subset_size=n), rel=1e-12)

    def k(a, b):
        return (a @ b.T / d + 1) ** 3
    written_out = (sum(k(x[i:i + 1], x[j:j + 1]).item() for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
                   + sum(k(y[i:i + 1], y[j:j + 1]).item() for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
                   - 2 * k(x, y).sum() / n**2)
    assert ours.mean == pytest.approx(written_out, rel=1e-10)
    assert ours.std == 0.0  # one subset


def test_kid_subsets_are_clean_fid_s_and_the_std_is_torchmetrics_over_the_same_subsets():
    x, y = features(50, shift=0.2, seed=3), features(70, seed=4)
    seed, subsets, size = 11, 7, 30
    np.random.seed(seed)
    clean = kernel_distance(x, y, num_subsets=subsets, max_subset_size=size)
    ours = kernel_inception_distance(x, y, num_subsets=subsets, max_subset_size=size, seed=seed)
    assert ours.mean == pytest.approx(clean, rel=1e-12)
    rng = np.random.RandomState(seed)  # the subsets, drawn in clean-fid's order: reference, then generated
    values = []
    for _ in range(subsets):
        real = torch.from_numpy(y[rng.choice(70, size, replace=False)])
        fake = torch.from_numpy(x[rng.choice(50, size, replace=False)])
        values.append(poly_mmd(real, fake))
    expected = torch.stack(values)
    assert ours.mean == pytest.approx(expected.mean().item(), rel=1e-10)
    assert ours.std == pytest.approx(expected.std(unbiased=False).item(), rel=1e-10)  # torchmetrics' kid_std


@pytest.mark.parametrize("nearest_k", [3, 5])
def test_precision_recall_density_coverage_equal_the_prdc_package(monkeypatch, nearest_k):
    monkeypatch.setattr(precision_recall, "BLOCK_ROWS", 7)  # blocks of rows, as on a large reference
    fake, real = features(45, shift=0.4, seed=5), features(60, seed=6)
    expected = compute_prdc(real_features=real, fake_features=fake, nearest_k=nearest_k)
    ours = precision_recall_density_coverage(fake, real, nearest_k)
    assert set(ours) == set(expected)
    for key, value in expected.items():
        assert ours[key] == pytest.approx(float(value), rel=1e-12), key
    radii = nearest_neighbour_radii(real, nearest_k)
    assert precision_recall_density_coverage(fake, real, nearest_k, radii) == ours


def initial_noise(seed: int) -> torch.Tensor:
    return torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(seed))


def test_no_two_seeds_or_draws_share_an_initial_noise_and_the_same_triple_repeats_it():
    triples = [(s, d, i) for s in (0, 1) for d in (0, 1) for i in range(256)]
    seeds = [image_noise_seed(*t) for t in triples]
    assert len(set(seeds)) == len(triples) and all(0 <= s < 2**63 for s in seeds)
    noises = {tuple(initial_noise(s).flatten()[:8].tolist()) for s in seeds}
    assert len(noises) == len(triples)
    assert torch.equal(initial_noise(image_noise_seed(1, 1, 7)), initial_noise(image_noise_seed(1, 1, 7)))
    assert image_noise_seeds(3, 2, range(4)) == [image_noise_seed(3, 2, i) for i in range(4)]
    old_rule = {s + i for s in (0, 1) for i in range(256)}
    assert len(old_rule) == 257  # seed + i: seeds 0 and 1 shared 255 of 256 noises
    assert kid_subset_seed(0, 0) != kid_subset_seed(0, 1) and 0 <= kid_subset_seed(0, 0) < 2**32


def test_draws_take_disjoint_prompts_when_the_pool_allows_else_repeat_them():
    pool = [f"caption {i}" for i in range(10)]
    prompts = PromptSet(pool[:4], [], pool=pool)
    assert prompts.draw_prompts(2) == [(0, pool[:4]), (4, pool[4:8])]
    assert prompts.draw_prompts(3) == [(0, pool[:4])] * 3  # 12 > 10: the same prompts, other noise
    assert PromptSet(pool[:4], []).draw_prompts(2) == [(0, pool[:4])] * 2


def test_summary_is_the_mean_and_the_sample_sd_over_draws():
    draws = [{"fid": f, "clip_score": c, "kid": k, "kid_std": s, "precision": 0.5, "recall": r,
              "density": 1.0, "coverage": 0.8} for f, c, k, s, r in ((3.0, 0.3, 0.01, 0.002, 0.6),
                                                                      (4.0, 0.2, 0.03, 0.004, 0.4),
                                                                      (5.5, 0.25, 0.02, 0.003, 0.5))]
    out = summarise_draws(draws)
    assert out["fid"] == pytest.approx(12.5 / 3) and out["recall"] == pytest.approx(0.5)
    assert out["fid_std"] == pytest.approx(np.std([3.0, 4.0, 5.5], ddof=1))
    assert out["clip_score_std"] == pytest.approx(0.05)
    assert out["kid_std"] == 0.002 and out["kid_draws_std"] == pytest.approx(0.01)
    single = summarise_draws(draws[:1])
    assert single["fid"] == 3.0 and single["fid_std"] is None and single["clip_score_std"] is None


def test_spec_hash_changes_only_with_the_settings_that_change_a_number():
    args = dict(benchmark="toy", prompt_hash="d" * 64, num_images=256, eval_res=32, seed=0,
                features={"name": "f"}, reference={"count": 1000}, clip={"model": "toy"}, photo_prefix=False)
    sampler = sampler_spec(SamplerSetting("student", 2, 0.0), {"name": "LCMScheduler"}, 32)

    def digest(scores: ScoreSettings, hashes: list[str] | None = None) -> str:
        return spec_hash(eval_spec(protocol_spec(**args, scores=scores, draw_prompt_hashes=hashes), sampler))

    base = digest(ScoreSettings())
    assert base == digest(ScoreSettings()) == digest(ScoreSettings(1, 100, 1000, 3, 5), ["d" * 64])
    changed = [ScoreSettings(draws=2), ScoreSettings(kid_subsets=50), ScoreSettings(kid_subset_size=500),
               ScoreSettings(kid_degree=2), ScoreSettings(nearest_k=3)]
    hashes = {base, *(digest(s) for s in changed), digest(ScoreSettings(draws=2), ["d" * 64, "e" * 64])}
    assert len(hashes) == len(changed) + 2


def test_a_wrong_eval_draws_names_the_key_before_anything_loads():
    from omegaconf import OmegaConf

    from tests.fixtures_eval import compose_evaluate

    for bad in ("0", "-1"):
        with pytest.raises(ConfigError, match=r"eval\.draws.*integer >= 1"):
            OmegaConf.to_object(compose_evaluate(["run_dir=x", f"eval.draws={bad}"]))  # the evaluate schema
    with pytest.raises(Exception, match=r"eval\.draws"):
        compose_evaluate(["run_dir=x", "eval.draws=two"])
