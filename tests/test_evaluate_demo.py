"""The evaluation (chapters 20 to 05e) and the main job from the outside: `mri-diffusion evaluate` and `mri-diffusion demo` end to end, and every bad input of `evaluate`."""
import json, os, subprocess, sys
import numpy as np
import torch
from PIL import Image
from pathlib import Path
import pytest
from conftest import cli, lock_held_elsewhere, one_line_error
from mri_diffusion_nb.data import mni152_slices, save_cache
from mri_diffusion_nb.sampling import find_weights

@pytest.fixture(scope='module')
def gen(tmp_path_factory, tiny_run):
    "A tiny model and a guidance sweep generated from it into one folder tree."
    d = tmp_path_factory.mktemp('ev')
    for w in (0, 7):
        r = cli('sample', '--model', tiny_run, '--n', 8, '--guidance', w, '--sampler', 'dpm', '--steps', 5, '--out', d/f'w{w}')
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

def test_evaluate_bad_fake_folder(tmp_path):
    r = cli('evaluate', '--fake', tmp_path/'nothing', '--out', tmp_path/'rep')
    assert r.returncode != 0 and 'nothing' in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path/'rep').exists()

def _has_demo():
    try: find_weights('demo'); return True
    except Exception: return False

def _check_demo(r, d, per_class):
    assert r.returncode == 0, r.stderr
    assert (d/'grid.png').exists() and (d/'report'/'report.json').exists()
    for sub, ext in (('png', '.png'), ('nifti', '.nii.gz'), ('dicom', '.dcm')):
        assert len(list((d/'samples'/sub).glob('*' + ext))) == 4*per_class
    assert 'class adherence' in r.stdout and str(d/'grid.png') in r.stdout
    rep = json.loads((d/'report'/'report.json').read_text())
    assert rep['class_adherence']['n'] == 4*per_class

@pytest.mark.skipif(not _has_demo(), reason='the demo model is not installed with this package')
def test_demo_main_job_in_miniature(tmp_path):
    "The main job's whole path at one image per class and four steps (the slow tier runs it at its defaults)."
    _check_demo(cli('demo', '--out', tmp_path/'demo', '--per-class', 1, '--steps', 4), tmp_path/'demo', 1)
    one_line_error(cli('demo', '--out', tmp_path/'bad', '--per-class', 0), '--per-class must be at least 1')
    assert not (tmp_path/'bad').exists()

@pytest.mark.slow
@pytest.mark.skipif(not _has_demo(), reason='the demo model is not installed with this package')
def test_demo_main_job(tmp_path):
    _check_demo(cli('demo', '--out', tmp_path/'demo'), tmp_path/'demo', 8)

def test_demo_train_first(tmp_path):
    r = cli('demo', '--out', tmp_path/'demo', '--train', '--train-steps', 4, '--per-class', 1, '--steps', 4)
    assert r.returncode == 0, r.stderr
    assert 'trained' in r.stdout and (tmp_path/'demo'/'run'/'ema').is_dir() and (tmp_path/'demo'/'grid.png').exists()


# --- evaluate: reliability (issue 18) -------------------------------------------

def write_fake(d, n=12, res=32, noise=0.05, seed=0, size=None):
    "A generated-looking folder without a model: noisy built-in slices as 8-bit PNGs plus manifest.csv."
    from mri_diffusion_nb.data import mni152_slices
    real = mni152_slices(res=res)
    g = torch.Generator().manual_seed(seed)
    x = (real.images[:n] + noise*torch.randn(real.images[:n].shape, generator=g)).clamp(-1, 1)
    d.mkdir(parents=True, exist_ok=True)
    rows = ['file,class,seed,guidance,sampler,steps,model']
    for i in range(n):
        a = ((x[i, 0].numpy() + 1)*127.5).round().astype(np.uint8)
        Image.fromarray(a if size is None else a[:size, :size]).save(d/f'{i}.png')
        rows.append(f"{i}.png,{int(real.labels[i])},{i},3.0,ddim,5,test")
    (d/'manifest.csv').write_text('\n'.join(rows) + '\n')
    return d

def offline_env(tmp_path):
    return {'MRI_DIFFUSION_INCEPTION_WEIGHTS': str(tmp_path/'missing.pth'), 'TORCH_HOME': str(tmp_path/'th')}

@pytest.fixture(scope='module')
def fake(tmp_path_factory): return write_fake(tmp_path_factory.mktemp('fake')/'f')

def test_evaluate_offline_writes_everything_but_fid(fake, tmp_path):
    r = cli('evaluate', '--fake', fake, '--out', tmp_path/'rep', '--offline', '--device', 'cpu', env=offline_env(tmp_path))
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path/'rep'/'report.json').read_text())
    assert rep['fid']['value'] is None and rep['fid']['available'] is False and 'missing.pth' in rep['fid']['reason']
    assert rep['kid']['mean'] is None and 'unavailable' in rep['kid']['protocol']
    assert rep['standin']['fid']['value'] >= 0 and 'STAND-IN' in rep['standin']['fid']['protocol']
    for k in ('memorization', 'diversity', 'class_adherence'): assert 'protocol' in rep[k], k
    assert rep['memorization']['closer_share'] is not None and rep['protocol']['device'] == 'cpu'
    assert 'unavailable' in r.stdout and 'stand-in FID' in r.stdout

def test_evaluate_strict_offline_is_one_line_and_writes_nothing(fake, tmp_path):
    r = cli('evaluate', '--fake', fake, '--out', tmp_path/'rep', '--offline', '--strict', env=offline_env(tmp_path))
    one_line_error(r, 'missing.pth')
    assert not (tmp_path/'rep').exists() and not list(tmp_path.glob('.tmp-*'))

def test_evaluate_out_problems_found_first(fake, tmp_path):
    (tmp_path/'file').write_text('x')
    one_line_error(cli('evaluate', '--fake', fake, '--out', tmp_path/'file'), 'file', 'is a file')
    one_line_error(cli('evaluate', '--fake', fake, '--out', tmp_path/'file'/'rep'), 'is a file, not a folder')
    (tmp_path/'mine').mkdir(); (tmp_path/'mine'/'notes.txt').write_text('keep me')
    one_line_error(cli('evaluate', '--fake', fake, '--out', tmp_path/'mine'), 'not an evaluation report')
    assert (tmp_path/'mine'/'notes.txt').read_text() == 'keep me'
    one_line_error(cli('evaluate', '--fake', fake, '--out', fake), 'not an evaluation report')  # --out = --fake is refused

def test_evaluate_read_only_out(fake, tmp_path):
    if os.geteuid() == 0:  # root writes through permissions: use a read-only file system
        ro = Path('/sys/mri-diffusion-test-report')
        if os.access('/sys', os.W_OK) and not Path('/sys').stat().st_mode & 0o200 == 0:
            try: ro.mkdir(); ro.rmdir(); pytest.skip('/sys is writable here')
            except OSError: pass
    else:
        (tmp_path/'ro').mkdir(); os.chmod(tmp_path/'ro', 0o555); ro = tmp_path/'ro'/'rep'
    one_line_error(cli('evaluate', '--fake', fake, '--out', ro), 'cannot write here')

def test_evaluate_tiny_pngs_and_bad_options(tmp_path):
    tiny = write_fake(tmp_path/'tiny', n=3, size=4)
    one_line_error(cli('evaluate', '--fake', tiny, '--out', tmp_path/'rep'), '0.png', '4x4 px', 'too small')
    one_line_error(cli('evaluate', '--fake', tiny, '--out', tmp_path/'rep', '--device', 'gpu7'), '--device gpu7')
    if not torch.cuda.is_available():
        one_line_error(cli('evaluate', '--fake', tiny, '--out', tmp_path/'rep', '--device', 'cuda'), 'CUDA is not available')
    one_line_error(cli('evaluate', '--fake', tiny, '--out', tmp_path/'rep', '--by', 'nonsense'), '--by nonsense')
    assert not (tmp_path/'rep').exists()

def test_evaluate_locked_out(fake, tmp_path):
    with lock_held_elsewhere(tmp_path/'rep', command='test holder'):
        one_line_error(cli('evaluate', '--fake', fake, '--out', tmp_path/'rep', '--feature', 'standin'), 'in use', 'test holder')

KILL_MID_WRITE = r"""
import json, os, sys, matplotlib; matplotlib.use('Agg')
import matplotlib.pyplot as plt
from mri_diffusion_nb import report as M
rep = json.loads(open(sys.argv[1]).read())
class Kill:
    dpi = 72
    def savefig(self, *a, **k): os.kill(os.getpid(), 9)
rep['_figures'] = {'samples': plt.figure(), 'zz_kill': Kill()}
M.write_report(rep, sys.argv[2])
"""

@pytest.mark.slow
def test_evaluate_report_is_a_set_killed_mid_write(fake, tmp_path):
    out = tmp_path/'rep'
    r = cli('evaluate', '--fake', fake, '--out', out, '--feature', 'standin')
    assert r.returncode == 0, r.stderr
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    k = subprocess.run([sys.executable, '-c', KILL_MID_WRITE, str(out/'report.json'), str(out)], capture_output=True, text=True)
    assert k.returncode == -9, k.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old complete set, nothing new beside it
    assert len(list(tmp_path.glob('.tmp-rep-*'))) == 1  # the killed writer's temporary set
    r = cli('evaluate', '--fake', fake, '--out', out, '--feature', 'standin')  # the same command runs and cleans up
    assert r.returncode == 0, r.stderr
    assert not list(tmp_path.glob('.tmp-rep-*')) and (out/'report.json').exists()

def test_evaluate_reads_every_png_once(fake, tmp_path, monkeypatch):
    from mri_diffusion_nb import report as M, cli as C
    calls = []
    real_read = M.read_png
    monkeypatch.setattr(M, 'read_png', lambda p: calls.append(str(p)) or real_read(p))
    assert C.main(['evaluate', '--fake', str(fake), '--out', str(tmp_path/'rep'), '--feature', 'standin', '--device', 'cpu']) == 0
    assert sorted(calls) == sorted(set(calls)) and len(calls) == 12

def test_evaluate_garbage_manifest_and_generation_json(tmp_path):
    d = write_fake(tmp_path/'g', n=4)
    good = (d/'manifest.csv').read_bytes()
    (d/'generation.json').write_bytes(b'\x00\xffnot json{')  # evaluate reads the manifest, never generation.json
    (d/'manifest.csv').write_bytes(b'\x89\x00\xff\xfe garbage \x00\n\x01\x02')
    one_line_error(cli('evaluate', '--fake', d, '--out', tmp_path/'rep'), 'manifest.csv')
    (d/'manifest.csv').write_text('file,class,seed,guidance,sampler,steps,model\n0.png,zebra,0,3.0,ddim,5,test\n1.png,0,1,3.0,ddim,5,test\n')
    one_line_error(cli('evaluate', '--fake', d, '--out', tmp_path/'rep', '--device', 'cpu', '--feature', 'standin'), 'manifest.csv', "line 2: class 'zebra'")
    (d/'manifest.csv').write_text('nonsense,columns\n1,2\n')
    one_line_error(cli('evaluate', '--fake', d, '--out', tmp_path/'rep'), 'manifest.csv', 'missing columns')
    assert not (tmp_path/'rep').exists()
    (d/'manifest.csv').write_bytes(good)  # the corrected folder then evaluates, garbage generation.json and all
    r = cli('evaluate', '--fake', d, '--out', tmp_path/'rep', '--device', 'cpu', '--feature', 'standin')
    assert r.returncode == 0, r.stderr

def test_evaluate_compares_guidance_methods(gen, tiny_run, tmp_path):
    "Two runs with different guidance methods merged into one folder: `--by guidance_method` reports each; an older manifest without the column means plain CFG."
    import csv, shutil
    r = cli('sample', '--model', tiny_run, '--n', 8, '--guidance', 7, '--sampler', 'dpm', '--steps', 5, '--guidance-method', 'interval', '--out', tmp_path/'iv')
    assert r.returncode == 0, r.stderr
    both = tmp_path/'both'; (both/'png').mkdir(parents=True)
    rows = []
    for tag, d in (('cfg', gen/'w7'), ('iv', tmp_path/'iv')):
        for row in csv.DictReader(open(d/'manifest.csv')):
            shutil.copy(d/row['file'], both/'png'/f"{tag}-{Path(row['file']).name}"); rows.append({**row, 'file': f"png/{tag}-{Path(row['file']).name}"})
    with open(both/'manifest.csv', 'w', newline='') as f:
        w = csv.DictWriter(f, list(rows[0])); w.writeheader(); w.writerows(rows)
    assert {row['guidance_method'] for row in rows} == {'cfg', 'interval:lo=0.28,hi=5.42'}
    save_cache(mni152_slices(res=32), tmp_path/'real.safetensors')
    r = cli('evaluate', '--real', tmp_path/'real.safetensors', '--fake', both, '--out', tmp_path/'rep', '--feature', 'standin', '--by', 'guidance_method')
    assert r.returncode == 0, r.stderr
    reps = json.loads((tmp_path/'rep'/'report.json').read_text())
    groups = [g['group']['guidance_method'] for g in (reps['reports'] if 'reports' in reps else reps)]
    assert sorted(groups) == ['cfg', 'interval:lo=0.28,hi=5.42']
