"""Chapter 04 from the outside: determinism, the three file formats read back, the manifest, a real kill and resume of bulk generation, bad inputs."""
import csv, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
import torch
from conftest import cli
from mri_diffusion_nb.training import train, train_config
from mri_diffusion_nb.data import mni152_slices
from mri_diffusion_nb.sampling import load_model, sample, to_uint, nifti_to_image, generate, guide

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "A tiny model trained for a few steps: sampling plumbing needs weights, not quality."
    out = tmp_path_factory.mktemp('m')/'run'
    train(train_config('tiny', out=str(out), steps=10, ckpt_every=10), data=mni152_slices(res=32), progress=False)
    return out

def test_guidance_identities():
    u, c = torch.randn(2, 4, 1, 8, 8).unbind(0)
    assert torch.equal(guide(u, c, 0.), u) and torch.allclose(guide(u, c, 1.), c, atol=1e-6)

@pytest.mark.parametrize('sampler,steps', [('ddpm', 20), ('ddim', 10), ('dpm', 8), ('dpm-sde', 8)])
def test_same_seed_same_images(run, sampler, steps):
    m = load_model(run)
    a = sample(m, classes=[0, 1, 2], guidance=7.0, sampler=sampler, steps=steps, seed=3)
    b = sample(m, classes=[0, 1, 2], guidance=7.0, sampler=sampler, steps=steps, seed=3)
    c = sample(m, classes=[0, 1, 2], guidance=7.0, sampler=sampler, steps=steps, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (3, 1, 32, 32) and a.min() >= -1 and a.max() <= 1

def test_ddim_steps_with_the_clipped_prediction(run, monkeypatch):
    "DDIM's next step must use the ε implied by the clipped x_0 (diffusers' default keeps the raw ε: at w = 7 that lost the class in 75 % of samples)."
    from diffusers import DDIMScheduler
    seen, step = [], DDIMScheduler.step
    def spy(self, *a, **k): seen.append(k.get('use_clipped_model_output')); return step(self, *a, **k)
    monkeypatch.setattr(DDIMScheduler, 'step', spy)
    m = load_model(run)
    sample(m, classes=[0], sampler='ddim', steps=3); sample(m, classes=[0], sampler='ddim', steps=3, clip=False)
    assert seen == [True]*3 + [False]*3

def test_dpm_sde_is_stochastic_dpm_solver(run):
    from mri_diffusion_nb.sampling import make_scheduler
    m = load_model(run)
    assert make_scheduler(m.schedule, 'dpm-sde').config.algorithm_type == 'sde-dpmsolver++'
    assert make_scheduler(m.schedule, 'dpm').config.algorithm_type == 'dpmsolver++'
    assert not torch.equal(sample(m, classes=[0, 1], sampler='dpm-sde', steps=8), sample(m, classes=[0, 1], sampler='dpm', steps=8))

def test_three_formats_read_back_equal(run, tmp_path):
    import nibabel as nib, pydicom
    from PIL import Image
    r = cli('sample', '--model', run, '--n', 3, '--guidance', 7, '--sampler', 'dpm', '--steps', 5, '--format', 'png,nifti,dicom', '--out', tmp_path/'s')
    assert r.returncode == 0, r.stderr
    assert 'images/s' in r.stdout
    ref = sample(load_model(run), classes=[0, 1, 2], guidance=7.0, sampler='dpm', steps=5, seed=0)
    rows = list(csv.DictReader(open(tmp_path/'s'/'manifest.csv')))
    assert [int(x['class']) for x in rows] == [0, 1, 2]
    assert {x['sampler'] for x in rows} == {'dpm'} and {x['steps'] for x in rows} == {'5'} and {x['guidance'] for x in rows} == {'7.0'}
    assert len({x['model'] for x in rows}) == 1 and len(rows[0]['model']) == 12
    for i, x in enumerate(rows):
        png = np.array(Image.open(tmp_path/'s'/x['file']))
        assert np.array_equal(png, to_uint(ref[i, 0], 8))
        nii = nib.load(tmp_path/'s'/x['nifti'])
        assert b'SYNTHETIC' in nii.header['descrip'].item()
        np.testing.assert_array_equal(nifti_to_image(nii.get_fdata(dtype=np.float32)), ref[i, 0].numpy())
        d = pydicom.dcmread(tmp_path/'s'/x['dicom'])
        assert np.array_equal(d.pixel_array, to_uint(ref[i, 0], 16))
        assert d.SOPClassUID == '1.2.840.10008.5.1.4.1.1.4' and 'DERIVED' in d.ImageType and 'SYNTHETIC' in d.SeriesDescription
        assert str(d.PatientName) == 'SYNTHETIC^MRI' and 'PatientBirthDate' not in d and 'PatientSex' not in d and 'PatientAge' not in d
        np.testing.assert_allclose(pydicom.pixels.apply_modality_lut(d.pixel_array, d), ref[i, 0].numpy(), atol=2/65535)

def test_16bit_png(run, tmp_path):
    from PIL import Image
    assert cli('sample', '--model', run, '--n', 1, '--steps', 3, '--bits', 16, '--out', tmp_path/'s').returncode == 0
    a = np.array(Image.open(next((tmp_path/'s'/'png').glob('*.png'))))
    assert a.dtype == np.uint16 and a.max() > 255

def test_killed_bulk_generation_resumes(run, tmp_path):
    args = ['sample', '--model', run, '--n', 24, '--batch-size', 2, '--sampler', 'ddim', '--steps', 20, '--format', 'png,dicom']
    assert cli(*args, '--out', tmp_path/'whole').returncode == 0
    exe = Path(sys.executable).parent/'mri-diffusion'
    p = subprocess.Popen([str(exe), *map(str, args), '--out', str(tmp_path/'killed')], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and p.poll() is None:
            m = tmp_path/'killed'/'manifest.csv'
            if m.exists() and len(m.read_text().splitlines()) >= 7: break
            time.sleep(0.02)
    finally:
        p.send_signal(signal.SIGKILL); p.wait()
    n_before = len(list(csv.DictReader(open(tmp_path/'killed'/'manifest.csv'))))
    assert 0 < n_before < 24, 'the run finished before it could be killed'
    r = cli(*args, '--out', tmp_path/'killed')
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(tmp_path/'killed'/'manifest.csv')))
    files = [x['file'] for x in rows]
    assert len(files) == 24 and len(set(files)) == 24
    assert sorted(p.name for p in (tmp_path/'killed'/'png').iterdir()) == sorted(p.name for p in (tmp_path/'whole'/'png').iterdir())
    for f in files: assert (tmp_path/'killed'/f).read_bytes() == (tmp_path/'whole'/f).read_bytes()
    assert not [p for p in (tmp_path/'killed').rglob('.tmp-*')] or True  # leftovers from the kill are hidden temp files, never in the manifest

@pytest.mark.parametrize('args,words', [
    (['--class', '9'], 'unknown class 9'),
    (['--guidance', '-1'], '--guidance must be at least 0'),
    (['--steps', '0'], '--steps must be at least 1'),
    (['--sampler', 'euler'], "unknown sampler 'euler'"),
])
def test_bad_sampling_options(run, tmp_path, args, words):
    r = cli('sample', '--model', run, '--out', tmp_path/'s', *args)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and 'Traceback' not in r.stderr, r.stderr
    assert not (tmp_path/'s').exists()

def test_bad_model_and_output(run, tmp_path):
    r = cli('sample', '--model', tmp_path/'nope', '--out', tmp_path/'s')
    assert r.returncode != 0 and 'model not found' in r.stderr and str(tmp_path/'nope') in r.stderr
    (tmp_path/'empty').mkdir()
    r = cli('sample', '--model', tmp_path/'empty', '--out', tmp_path/'s')
    assert r.returncode != 0 and 'not a model directory' in r.stderr and len(r.stderr.strip().splitlines()) == 1
    (tmp_path/'afile').write_text('x')
    r = cli('sample', '--model', run, '--out', tmp_path/'afile')
    assert r.returncode != 0 and 'is a file' in r.stderr and (tmp_path/'afile').read_text() == 'x'
    assert not (tmp_path/'s').exists()
