"Tests for chapter 15 (theory): identities over every step and schedule, and the benchmark file the chapter reads."
import json, math
from pathlib import Path
import pytest
import torch
from diffusers.schedulers.scheduling_ddpm import rescale_zero_terminal_snr as diffusers_rescale
from mri_diffusion_nb.schedule import NoiseSchedule
from mri_diffusion_nb.theory import (GaussianMixture, elbo_weight, eps_from_score, grid_density, log_snr,
                                     rescale_zero_terminal_snr, shifted_abar, toy_sample, tweedie_x0)

KINDS = ('linear', 'cosine', 'scaled_linear')


@pytest.mark.parametrize('kind', KINDS)
def test_elbo_weight_is_the_snr_form_at_every_step(kind):
    s = NoiseSchedule(kind)
    t = torch.arange(1, 1000)
    ab = s.abar.double()
    snr = ab/(1 - ab)
    torch.testing.assert_close(elbo_weight(s, t), 0.5*(snr[t - 1]/snr[t] - 1), rtol=1e-9, atol=0)
    with pytest.raises(ValueError, match='decoder term'): elbo_weight(s, torch.tensor([0, 5]))


@pytest.mark.parametrize('kind', KINDS)
def test_zero_terminal_snr_matches_diffusers(kind):
    b = NoiseSchedule(kind).betas
    z = rescale_zero_terminal_snr(b)
    torch.testing.assert_close(z, diffusers_rescale(b), rtol=0, atol=1e-6)
    ab = torch.cumprod(1 - z, 0)
    assert ab[-1].item() == 0 and abs(ab[0].item() - (1 - b[0].item())) < 1e-6


def test_tweedie_is_the_mixture_posterior_mean_everywhere():
    gm = GaussianMixture([0.2, 0.5, 0.3], [-2., 0.1, 1.5], [0.2, 0.6, 0.3])
    x = torch.linspace(-4, 4, 201, dtype=torch.float64)
    for ab in (0.999, 0.7, 0.2, 1e-3):
        q = gm.noised(ab)
        torch.testing.assert_close(tweedie_x0(x, q.score(x), ab), gm.posterior_mean(x, ab), rtol=1e-9, atol=1e-9)
        s = NoiseSchedule()   # pred_x0 from the perfect ε is Tweedie's formula
        t = int((s.abar - ab).abs().argmin())
        abt = s.abar[t].item()
        x0 = s.pred_x0(x, eps_from_score(gm.noised(abt).score(x), abt), torch.full((len(x),), t))
        torch.testing.assert_close(x0, gm.posterior_mean(x, abt), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match='sum to 1'): GaussianMixture([0.5, 0.6], [0., 1.], [1., 1.])


def test_grid_density_and_shift():
    x = torch.linspace(-8, 8, 4001, dtype=torch.float64)
    p = grid_density(-0.5*x**2, x)
    assert abs(p.sum().item()*(x[1] - x[0]).item() - 1) < 1e-9
    assert abs(p.max().item() - 1/math.sqrt(2*math.pi)) < 1e-6
    ab = NoiseSchedule('cosine').abar.double()[:-1]
    torch.testing.assert_close(log_snr(shifted_abar(ab, 256)) - log_snr(ab), torch.full_like(ab, 2*math.log(64/256)))


def test_toy_sampler_reproduces_a_gaussian():
    "With the exact ε of N(μ, s²), both DDPM and the ODE land on it (few samples, few steps: a smoke test with wide limits)."
    gm = GaussianMixture([1.], [0.5], [0.3])
    s = NoiseSchedule()
    eps = lambda x, t: eps_from_score(gm.noised(s.abar[t].item()).score(x), s.abar[t].item())
    for eta in (1., 0.):
        x = toy_sample(eps, s, 2000, eta, seed=0, steps=250 if eta == 0 else None)
        assert abs(x.mean().item() - 0.5) < 0.03 and abs(x.std().item() - 0.3) < 0.03


def test_benchmark_file_matches_the_presets():
    "nbs/objectives.json records the presets chapter 15 quotes; a changed preset means rerunning `--presets-only`."
    from mri_diffusion_nb.training import TRAIN_PRESETS, train_config
    d = json.loads((Path(__file__).resolve().parents[1]/'nbs'/'objectives.json').read_text())
    assert set(d['protocol']['presets']) == set(TRAIN_PRESETS)
    for k, v in d['protocol']['presets'].items():
        c = train_config(k)
        assert (v['prediction'], v['schedule'], v['lr'], v['n_timesteps']) == (c.prediction, c.schedule, c.lr, c.n_timesteps), k
    assert [(r['prediction'], r['schedule']) for r in d['rows']] == [
        ('epsilon', 'linear'), ('v_prediction', 'linear'), ('epsilon', 'cosine'), ('v_prediction', 'cosine')]
    assert all(len(l['per_slice']) == d['protocol']['n_heldout'] for r in d['rows'] for l in r['levels'])
