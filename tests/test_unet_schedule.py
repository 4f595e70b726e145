"Tests for chapters 12 (unet) and 02 (schedule): what the notebooks can't show."
import json, subprocess, sys
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
from mri_diffusion_nb.unet import (PRESETS, UNetPreset, activation_fit, attention_resolutions, build_unet, forward_flops,
                                   get_preset, n_params, null_class, train_memory, train_step_peak_rss, train_throughput)
from mri_diffusion_nb.schedule import DIFFUSERS_BETA_SCHEDULE, NoiseSchedule, make_betas, timestep_frame, timestep_widget


def test_fresh_process_import():
    code = ("import sys, mri_diffusion_nb.unet as u, mri_diffusion_nb.schedule as s\n"
            "assert 'matplotlib.pyplot' not in sys.modules\n"
            "m = u.build_unet('tiny'); print(u.null_class(m), sorted(u.PRESETS), s.NoiseSchedule('cosine').abar.shape[0])")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ['4', "['demo',", "'paper',", "'tiny',", "'weak']", '1000']


@pytest.mark.parametrize('name', list(PRESETS))
def test_every_preset_builds_and_keeps_shape(name):
    p = get_preset(name)
    bs = 1 if name == 'paper' else 2
    m = build_unet(name, seed=0).eval()
    assert (m.config.in_channels, m.config.out_channels, m.config.sample_size) == (1, 1, p.res)
    assert m.config.num_class_embeds == p.n_classes + 1 and null_class(m) == p.n_classes
    x = torch.randn(bs, 1, p.res, p.res)
    with torch.no_grad():
        out = m(x, torch.randint(0, 1000, (bs,)), class_labels=torch.tensor([null_class(m)]*bs)).sample
    assert out.shape == x.shape and torch.isfinite(out).all()
    attn_levels = [r for r, a in zip(p.resolutions, p.attention) if a]
    assert {s for _, s in attention_resolutions(m)} == set(attn_levels) | {p.resolutions[-1]}


def test_paper_matches_published_layout():
    p = get_preset('paper')
    assert p.channels == (128, 128, 256, 256, 512, 512) and p.layers_per_block == 2
    assert [r for r, a in zip(p.resolutions, p.attention) if a] == [16]


def test_presets_and_errors():
    with pytest.raises(ValueError, match=r"unknown preset 'x' \(choose from tiny, demo, paper, weak\)"): get_preset('x')
    with pytest.raises(ValueError, match='does not divide'): UNetPreset('b', 32, (32, 36), 1, (False, False), norm_groups=8)
    with pytest.raises(ValueError, match='attention flags'): UNetPreset('b', 32, (32, 64), 1, (False,), norm_groups=8)
    with pytest.raises(ValueError, match='not divisible'): UNetPreset('b', 36, (32, 64, 64, 64), 1, (False,)*4, norm_groups=8)
    assert get_preset('demo') is not PRESETS['demo']  # a copy: editing it leaves the registry alone
    custom = UNetPreset('c', 16, [16, 32], 1, [False, True], n_classes=2, norm_groups=8)
    assert custom.channels == (16, 32) and custom.attention == (False, True)
    m = build_unet(custom, n_classes=7)
    assert m.config.num_class_embeds == 8 and null_class(m) == 7
    assert build_unet('tiny', n_classes=0).config.num_class_embeds == 1
    with pytest.raises(ValueError): build_unet('tiny', n_classes=-1)
    a, b = build_unet('tiny', seed=3), build_unet('tiny', seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_save_load_round_trip(tmp_path):
    m = build_unet('tiny', n_classes=3, seed=0).eval()
    m.save_pretrained(tmp_path/'model')
    assert (tmp_path/'model'/'diffusion_pytorch_model.safetensors').is_file()
    assert json.loads((tmp_path/'model'/'config.json').read_text())['num_class_embeds'] == 4
    back = UNet2DModel.from_pretrained(tmp_path/'model').eval()
    x, t, y = torch.randn(2, 1, 32, 32), torch.tensor([3, 900]), torch.tensor([0, null_class(back)])
    with torch.no_grad(): assert torch.equal(back(x, t, class_labels=y).sample, m(x, t, class_labels=y).sample)
    assert null_class(back) == 3 and n_params(back) == n_params(m)


def test_cost_helpers():
    m = build_unet('tiny', seed=0)
    f1 = forward_flops(m)
    assert f1 > 1e8 and forward_flops(m, 3) == 3*f1
    fixed, per = activation_fit(m)
    assert per > 0 and fixed >= 0
    assert train_memory(10, 0, 5, 2, ema=False) == 160 + 10 and train_memory(10, 0, 5, 2) == 200 + 10
    before = {k: v.clone() for k, v in m.state_dict().items()}
    assert train_throughput(m, batch_size=2, n_steps=1) > 0
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())  # trained a copy
    peak = train_step_peak_rss(m, batch_size=2, threads=1)
    assert 16*n_params(m) < peak < 4*2**30


@pytest.mark.parametrize('kind', list(DIFFUSERS_BETA_SCHEDULE))
@pytest.mark.parametrize('n_steps', [1000, 50])
def test_schedule_equals_diffusers(kind, n_steps):
    ns = NoiseSchedule(kind, n_steps)
    ref = DDPMScheduler(**ns.scheduler_config())
    assert ns.abar.dtype == ref.alphas_cumprod.dtype == torch.float32
    torch.testing.assert_close(ns.betas, ref.betas, atol=1e-6, rtol=0)
    torch.testing.assert_close(ns.abar, ref.alphas_cumprod, atol=1e-6, rtol=0)
    g = torch.Generator().manual_seed(0)
    t = torch.arange(n_steps)
    x0, noise = torch.rand(n_steps, 1, 8, 8, generator=g)*2 - 1, torch.randn(n_steps, 1, 8, 8, generator=g)
    torch.testing.assert_close(ns.q_sample(x0, t, noise), ref.add_noise(x0, noise, t), atol=1e-6, rtol=0)
    torch.testing.assert_close(ns.v_target(x0, noise, t), ref.get_velocity(x0, noise, t), atol=1e-6, rtol=0)
    snr = ns.snr(t)
    torch.testing.assert_close(snr/(1 + snr), ns.abar, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize('pred', ['epsilon', 'v_prediction'])
def test_targets_and_pred_x0(pred):
    ns = NoiseSchedule('cosine', prediction=pred)
    x0, noise, t = torch.rand(4, 1, 8, 8)*2 - 1, torch.randn(4, 1, 8, 8), torch.tensor([0, 10, 300, 700])
    xt = ns.q_sample(x0, t, noise)
    out = ns.target(x0, noise, t)
    assert torch.equal(out, noise if pred == 'epsilon' else ns.v_target(x0, noise, t))
    torch.testing.assert_close(ns.pred_x0(xt, out, t), x0, atol=1e-4, rtol=0)
    ref = DDPMScheduler(**ns.scheduler_config()).step(out[2:3], 300, xt[2:3]).pred_original_sample
    torch.testing.assert_close(ns.pred_x0(xt[2:3], out[2:3], t[2:3]), ref, atol=1e-5, rtol=0)


def test_schedule_dtype_device_and_config():
    ns = NoiseSchedule('linear')
    x0 = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    assert ns.q_sample(x0, torch.tensor([1, 2]), torch.randn_like(x0)).dtype == torch.float64
    with pytest.raises(ValueError, match="unknown schedule 'foo'"): make_betas('foo')
    with pytest.raises(ValueError, match="unknown prediction"): NoiseSchedule(prediction='sample')
    d = NoiseSchedule('scaled_linear', 500, 1e-4, 0.02, 'v_prediction').to_dict()
    back = NoiseSchedule.from_dict(json.loads(json.dumps(d)) | {'extra': 1})
    assert back.to_dict() == d and torch.equal(back.abar, NoiseSchedule(**d).abar)
    for S in (DDIMScheduler, DPMSolverMultistepScheduler):
        s = S.from_config(back.scheduler_config())
        assert s.config.prediction_type == 'v_prediction' and s.config.num_train_timesteps == 500
        torch.testing.assert_close(s.alphas_cumprod, back.abar, atol=1e-6, rtol=0)


def test_timestep_widget_updates():
    pytest.importorskip('ipywidgets')
    x0 = torch.rand(32, 32)*2 - 1
    xt, ab, snr = timestep_frame(x0[None], NoiseSchedule('linear'), 999, torch.zeros(32, 32))
    assert xt.shape == (32, 32) and abs(snr - ab/(1 - ab)) < 1e-6
    w = timestep_widget(x0, seed=1)
    pick, slider, row, info = w.children
    img, curve = row.children
    assert (slider.min, slider.max, slider.description) == (0, 999, 't')
    assert img.value[:4] == b'\x89PNG'
    before = img.value, curve.value, info.value
    slider.value = 990
    assert img.value != before[0] and curve.value != before[1] and info.value != before[2]
    v = img.value
    pick.value = 'cosine'
    assert img.value != v and 't = 990' in info.value
    timestep_widget(x0[None], schedules=('cosine',))  # (1, H, W) works too
