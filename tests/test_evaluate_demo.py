"""Chapter 05 and the main job from the outside: `mri-diffusion evaluate` and `mri-diffusion demo` end to end."""
import json
from pathlib import Path
import pytest
from conftest import cli
from mri_diffusion_nb.training import train, train_config
from mri_diffusion_nb.data import mni152_slices, save_cache
from mri_diffusion_nb.sampling import find_weights

@pytest.fixture(scope='module')
def gen(tmp_path_factory):
    "A tiny model and a guidance sweep generated from it into one folder tree."
    d = tmp_path_factory.mktemp('ev')
    train(train_config('tiny', out=str(d/'run'), steps=10, ckpt_every=10), data=mni152_slices(res=32), progress=False)
    for w in (0, 7):
        r = cli('sample', '--model', d/'run', '--n', 8, '--guidance', w, '--sampler', 'dpm', '--steps', 5, '--out', d/f'w{w}')
        assert r.returncode == 0, r.stderr
    return d

def test_evaluate_writes_report_with_protocols(gen, tmp_path):
    save_cache(mni152_slices(res=32), tmp_path/'real.safetensors')
    r = cli('evaluate', '--real', tmp_path/'real.safetensors', '--fake', gen/'w7', '--out', tmp_path/'rep', '--feature', 'standin')
    assert r.returncode == 0, r.stderr
    assert 'class adherence' in r.stdout and 'memorization' in r.stdout and 'report.md' in r.stdout
    rep = json.loads((tmp_path/'rep'/'report.json').read_text())
    assert rep['group'] == {'guidance': 7.0}
    for k in ('fid', 'kid', 'memorization', 'class_adherence', 'diversity'):
        assert 'protocol' in rep[k], k
    assert 'stand-in' in json.dumps(rep['protocol']['feature']).lower() or 'standin' in json.dumps(rep['protocol']['feature']).lower()
    assert rep['fid']['n_fake'] == 8 and rep['class_adherence']['n'] == 8
    assert (tmp_path/'rep'/'report.md').read_text().count('|') > 10
    assert list((tmp_path/'rep').glob('*.png'))

def test_evaluate_without_inception_weights_is_one_line(gen, tmp_path):
    r = cli('evaluate', '--real', 'mni152', '--fake', gen/'w0', '--out', tmp_path/'rep', '--offline',
            env={'MRI_DIFFUSION_INCEPTION_WEIGHTS': str(tmp_path/'missing.pth'), 'TORCH_HOME': str(tmp_path/'th')})
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and 'missing.pth' in lines[0] and 'Traceback' not in r.stderr, r.stderr
    assert not (tmp_path/'rep').exists()

def test_evaluate_bad_fake_folder(tmp_path):
    r = cli('evaluate', '--fake', tmp_path/'nothing', '--out', tmp_path/'rep')
    assert r.returncode != 0 and 'nothing' in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path/'rep').exists()

def _has_demo():
    try: find_weights('demo'); return True
    except Exception: return False

@pytest.mark.skipif(not _has_demo(), reason='the demo model is not installed with this package')
def test_demo_main_job(tmp_path):
    r = cli('demo', '--out', tmp_path/'demo')
    assert r.returncode == 0, r.stderr
    d = tmp_path/'demo'
    assert (d/'grid.png').exists() and (d/'report'/'report.json').exists()
    for sub, ext in (('png', '.png'), ('nifti', '.nii.gz'), ('dicom', '.dcm')):
        assert len(list((d/'samples'/sub).glob('*' + ext))) == 32
    assert 'class adherence' in r.stdout and str(d/'grid.png') in r.stdout

def test_demo_train_first(tmp_path):
    r = cli('demo', '--out', tmp_path/'demo', '--train', '--train-steps', 4)
    assert r.returncode == 0, r.stderr
    assert 'trained' in r.stdout and (tmp_path/'demo'/'run'/'ema').is_dir() and (tmp_path/'demo'/'grid.png').exists()
