"""Chapter 16 from the outside: `mri-diffusion train` end to end, a real kill and resume, two processes, bad inputs and damaged runs."""
import json, os, shutil, signal, subprocess, sys, time
from pathlib import Path
import pytest
from PIL import Image
import torch
from conftest import cli, free_port, lock_held_elsewhere, one_line_error
from diffusers import UNet2DModel
from mri_diffusion_nb.training import (StepBatches, TrainConfig, TrainingError, batch_indices, latest_checkpoint, read_metrics, train,
                                       train_config, weights_hash)
from mri_diffusion_nb.data import mni152_slices, save_cache

def _max_diff(a, b):
    ma, mb = UNet2DModel.from_pretrained(a), UNet2DModel.from_pretrained(b)
    return max((p - q).abs().max().item() for p, q in zip(ma.parameters(), mb.parameters()))

@pytest.fixture(scope='module')
def base_run(tmp_path_factory):
    "A finished 4-step tiny run with checkpoints at 2 and 4 (tests copy it before changing anything)."
    run = tmp_path_factory.mktemp('base')/'run'
    r = cli('train', '--out', run, '--steps', 4, '--ckpt-every', 2, '--log-every', 2, '--sample-every', 0, '--batch-size', 8)
    assert r.returncode == 0, r.stderr
    return run

def _copy(run, dst):
    shutil.copytree(run, dst)
    return dst

def test_tiny_run_writes_everything(tmp_path):
    "A 4-step run through the CLI: every file a run holds, the end-of-run grid, the geometry for sampling (the slow tier trains 150 steps)."
    r = cli('train', '--preset', 'tiny', '--out', tmp_path/'run', '--steps', 4, '--ckpt-every', 2, '--log-every', 2, '--sample-every', 4)
    assert r.returncode == 0, r.stderr
    run = tmp_path/'run'
    assert f'wrote {run}' in r.stdout
    for sub in ('model', 'ema', 'scheduler', 'config.json', 'metrics.jsonl', 'latest'): assert (run/sub).exists(), sub
    assert list((run/'model').glob('*.safetensors')) and not list(run.rglob('*.bin'))
    assert [m['step'] for m in read_metrics(run)] == [2, 4] and all(m['loss'] == m['loss'] for m in read_metrics(run))
    assert sorted(p.name for p in (run/'samples').iterdir()) == ['step-0000004.png']
    with Image.open(run/'samples'/'step-0000004.png') as im: assert (im.size, im.mode) == ((4*32, 2*32), 'L')
    cfg = TrainConfig.from_json((run/'config.json').read_text())
    assert cfg.class_names == mni152_slices(res=32).class_names
    assert cfg.geometry['res'] == 32 and cfg.geometry['pixel_mm'] > 0 and cfg.geometry['axis'] == 'axial'

@pytest.mark.slow
def test_tiny_trains_and_loss_falls(tmp_path):
    r = cli('train', '--preset', 'tiny', '--out', tmp_path/'run', '--steps', 150, '--ckpt-every', 50, '--sample-every', 150)
    assert r.returncode == 0, r.stderr
    run = tmp_path/'run'
    assert f'wrote {run}' in r.stdout
    for sub in ('model', 'ema', 'scheduler', 'config.json', 'metrics.jsonl', 'latest'): assert (run/sub).exists(), sub
    assert list((run/'model').glob('*.safetensors')) and not list(run.rglob('*.bin'))
    losses = [m['loss'] for m in read_metrics(run)]
    assert len(losses) == 15 and all(map(lambda l: l == l, losses))
    assert sum(losses[-3:])/3 < 0.7*sum(losses[:3])/3, losses
    assert sorted(p.name for p in (run/'samples').iterdir()) == ['step-0000150.png']   # the end-of-run grid from chapter 18's sampler
    with Image.open(run/'samples'/'step-0000150.png') as im: assert (im.size, im.mode) == ((4*32, 2*32), 'L')  # a column per class, two rows
    cfg = TrainConfig.from_json((run/'config.json').read_text())
    assert cfg.class_names == mni152_slices(res=32).class_names
    assert cfg.geometry['res'] == 32 and cfg.geometry['pixel_mm'] > 0 and cfg.geometry['axis'] == 'axial'   # for sampling and export

def test_sample_every_zero_means_no_grid(base_run):
    assert not (base_run/'samples').exists()
    assert [m['step'] for m in read_metrics(base_run)] == [2, 4]

def test_resume_clears_what_a_kill_left(tmp_path, base_run):
    "A kill in the middle of a checkpoint leaves a temp folder: resuming removes it and goes on (the slow tier kills a real process)."
    run = _copy(base_run, tmp_path/'run')
    left = run/'checkpoints'/'.tmp-ckpt-0000099-12345-abcdef'
    left.mkdir(); (left/'state.pt').write_bytes(b'partial')
    r = cli('train', '--resume', '--out', run, '--steps', 6)
    assert r.returncode == 0, r.stderr
    assert 'resuming' in r.stdout and not left.exists() and not list(run.rglob('.tmp-*'))
    assert latest_checkpoint(run).name == 'ckpt-0000006'

@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(tmp_path):
    args = ['--preset', 'tiny', '--steps', 60, '--ckpt-every', 10, '--sample-every', 0, '--dropout', 0.1, '--augment']
    assert cli('train', *args, '--out', tmp_path/'whole').returncode == 0
    exe = Path(sys.executable).parent/'mri-diffusion'
    p = subprocess.Popen([str(exe), 'train', *map(str, args), '--out', str(tmp_path/'killed')], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and p.poll() is None:
            ck = latest_checkpoint(tmp_path/'killed')
            if ck is not None and int(ck.name.split('-')[1]) >= 20: break
            time.sleep(0.05)
    finally:
        p.send_signal(signal.SIGKILL); p.wait()
    ck = latest_checkpoint(tmp_path/'killed')
    assert ck is not None and int(ck.name.split('-')[1]) < 60, 'the run finished before it could be killed'
    UNet2DModel.from_pretrained(ck/'model')                    # the last complete checkpoint loads
    left = tmp_path/'killed'/'checkpoints'/'.tmp-ckpt-0000099-12345-abcdef'   # what a kill in the middle of a checkpoint leaves
    left.mkdir(); (left/'state.pt').write_bytes(b'partial')
    r = cli('train', '--resume', '--out', tmp_path/'killed')
    assert r.returncode == 0, r.stderr
    assert 'resuming' in r.stdout
    assert not left.exists() and not list((tmp_path/'killed').rglob('.tmp-*'))
    assert UNet2DModel.from_pretrained(tmp_path/'whole'/'model').config.dropout == 0.1
    assert _max_diff(tmp_path/'whole'/'model', tmp_path/'killed'/'model') == 0       # bit-equal with dropout and augmentation on
    assert _max_diff(tmp_path/'whole'/'ema', tmp_path/'killed'/'ema') == 0
    assert [m['step'] for m in read_metrics(tmp_path/'killed')] == [m['step'] for m in read_metrics(tmp_path/'whole')]

WORKER = '''
import hashlib, json, os, sys
from pathlib import Path
import torch
import mri_diffusion_nb.training as T
from mri_diffusion_nb.data import mni152_slices
out, rank = Path(sys.argv[1]), int(os.environ['RANK'])
data = mni152_slices(res=32)
seen, orig = [], T.StepBatches.indices
def spy(self, step, micro=0):
    j = orig(self, step, micro); seen.append((step, j.tolist())); return j
T.StepBatches.indices = spy
res = {'world': int(os.environ['WORLD_SIZE'])}
masks, spying, dropout_forward = [], [True], torch.nn.Dropout.forward
def dropout_spy(self, x):                                                # the U-Net's dropout masks, as hashes, during the first run
    y = dropout_forward(self, x)
    if spying[0] and self.training and self.p > 0: masks.append(hashlib.sha256((y == 0).cpu().numpy().tobytes()).hexdigest())
    return y
torch.nn.Dropout.forward = dropout_spy
kw = dict(steps=6, batch_size=4, ckpt_every=2, log_every=2, sample_every=0)
def run(name, stop_after=None, **k):
    h = {}
    T.train(T.train_config('tiny', out=str(out/name), **{**kw, **k}), data=data, progress=False, stop_after=stop_after,
            on_end=lambda m: h.update(h=T.weights_hash(m)))
    return h['h']
res['whole'] = run('whole', dropout=0.1, augment=True)
res['batches'], res['masks'] = list(seen), list(masks)
spying[0] = False
run('killed', dropout=0.1, augment=True, stop_after=5)                 # "killed" 1 step after the checkpoint at step 4
res['killed_at'] = T.latest_checkpoint(out/'killed').name
res['resumed'] = T.train(T.train_config('tiny', out=str(out/'killed'), **kw, dropout=0.1, augment=True), data=data, progress=False, resume=True) and 'ok'
res['plain'] = run('plain')                                          # no dropout, no augmentation: comparable with 1 process x batch 8
bad = T.StepBatches(data, 4, world=2, rank=1).indices(2)[0]          # an image only rank 1 sees, at step 2
data.images[bad] = float('nan')
try: T.train(T.train_config('tiny', out=str(out/'nan'), **{**kw, 'ckpt_every': 1, 'log_every': 1}), data=data, progress=False); res['nan'] = 'no error'
except T.TrainingError as e: res['nan'] = str(e)
(out/f'rank{rank}.json').write_text(json.dumps(res))
'''

@pytest.mark.slow
def test_two_processes(tmp_path):
    "2 processes (gloo): a killed and resumed run with dropout and augmentation is bit-equal; ranks' batches are disjoint and their dropout masks differ; 2 x 4 = 1 x 8; a NaN on one rank stops both."
    (tmp_path/'worker.py').write_text(WORKER)
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', str(free_port()), str(tmp_path/'worker.py'), str(tmp_path)],
                       capture_output=True, text=True, timeout=900, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert r.returncode == 0, r.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path/f'rank{k}.json').read_text()) for k in (0, 1))
    assert r0['world'] == r1['world'] == 2 and r0['whole'] == r1['whole']
    assert r0['killed_at'] == 'ckpt-0000004'
    assert r0['masks'] and len(r0['masks']) == len(r1['masks'])
    assert all(a != b for a, b in zip(r0['masks'], r1['masks']))              # every dropout call draws another mask on each rank
    for sub in ('model', 'ema'): assert _max_diff(tmp_path/'whole'/sub, tmp_path/'killed'/sub) == 0
    assert r0['whole'] == weights_hash(UNet2DModel.from_pretrained(tmp_path/'whole'/'model'))
    b0, b1 = dict((s, j) for s, j in r0['batches']), dict((s, j) for s, j in r1['batches'])
    assert sorted(b0) == sorted(b1) == list(range(6))
    for s in range(6):
        assert not set(b0[s]) & set(b1[s])                                     # disjoint shares
        assert len(b0[s]) == len(b1[s]) == 4
    one = StepBatches(mni152_slices(res=32), 8)
    assert all(b0[s] + b1[s] == one.indices(s).tolist() for s in range(6))  # together: the 1-process batch of 8
    # 1 process x batch 8 trains like 2 processes x batch 4
    train(train_config('tiny', out=str(tmp_path/'single'), steps=6, batch_size=8, ckpt_every=2, log_every=2, sample_every=0), data=mni152_slices(res=32), progress=False)
    assert _max_diff(tmp_path/'single'/'model', tmp_path/'plain'/'model') < 1e-5
    for res in (r0, r1): assert 'non-finite loss in steps 3-3' in res['nan'], res['nan']   # every rank stops, at the same step
    assert latest_checkpoint(tmp_path/'nan').name == 'ckpt-0000002'

@pytest.mark.parametrize('args,words', [
    (['--preset', 'huge'], "invalid choice: 'huge'"),
    (['--data', 'nowhere.safetensors'], 'nowhere.safetensors: data file not found'),
    (['--batch-size', '0'], 'batch_size must be between 1 and 4,096'),
    (['--batch-size', '1000000000'], 'batch_size must be between 1 and 4,096'),
    (['--sample-every', '-1'], 'sample_every must be between 0 and'),
    (['--lr', 'nan'], 'lr must be a positive number'),
    (['--resume'], 'no complete checkpoint to resume from'),
])
def test_bad_configuration_is_refused_in_one_line(tmp_path, args, words):
    r = cli('train', '--out', tmp_path/'run', *args)
    one_line_error(r, words)
    assert not (tmp_path/'run').exists()

@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_cuda_without_a_gpu_is_refused(tmp_path):
    one_line_error(cli('train', '--out', tmp_path/'run', '--device', 'cuda'), '--device cuda: CUDA is not available')
    assert not (tmp_path/'run').exists()
    one_line_error(cli('train', '--out', tmp_path/'run', '--device', 'tpu'), "invalid choice: 'tpu'")

def test_a_file_as_parent_folder_is_named(tmp_path):
    (tmp_path/'f').write_text('not a folder')
    one_line_error(cli('train', '--out', tmp_path/'f'/'run', '--steps', 2), str(tmp_path/'f'))
    assert (tmp_path/'f').read_text() == 'not a folder'

def test_wrong_resolution_is_refused(tmp_path):
    save_cache(mni152_slices(res=64), tmp_path/'mni64.safetensors')
    r = cli('train', '--preset', 'tiny', '--data', tmp_path/'mni64.safetensors', '--out', tmp_path/'run')
    one_line_error(r, 'slices are 64 px but preset')
    assert not (tmp_path/'run').exists()

def test_labels_beyond_the_classes_are_refused(tmp_path):
    d = mni152_slices(res=32)
    d.labels[5] = d.n_classes + 3
    save_cache(d, tmp_path/'bad.safetensors')
    one_line_error(cli('train', '--data', tmp_path/'bad.safetensors', '--out', tmp_path/'run'), 'bad.safetensors: label 7 is outside 0..3')
    assert not (tmp_path/'run').exists()                                     # no config.json left behind

def test_existing_run_is_not_overwritten(tmp_path, base_run):
    run = _copy(base_run, tmp_path/'run')
    before = (run/'latest').read_text()
    one_line_error(cli('train', '--out', run, '--steps', 5), 'already holds a run')
    assert (run/'latest').read_text() == before

def test_moved_run_resumes_in_its_new_place(tmp_path, base_run):
    old = _copy(base_run, tmp_path/'old')
    new = tmp_path/'new'
    os.replace(old, new)
    r = cli('train', '--resume', '--out', new, '--steps', 6)
    assert r.returncode == 0, r.stderr
    assert not old.exists() and latest_checkpoint(new).name == 'ckpt-0000006'
    assert TrainConfig.from_json((new/'config.json').read_text()).out == str(new)

def test_copied_run_resumes_in_the_copy_and_leaves_the_original(tmp_path, base_run):
    orig = _copy(base_run, tmp_path/'orig')
    snap = {p.relative_to(orig): p.read_bytes() for p in orig.rglob('*') if p.is_file()}
    copy = _copy(orig, tmp_path/'copy')
    r = cli('train', '--resume', '--out', copy, '--steps', 8)
    assert r.returncode == 0, r.stderr
    assert latest_checkpoint(copy).name == 'ckpt-0000008'
    assert {p.relative_to(orig): p.read_bytes() for p in orig.rglob('*') if p.is_file()} == snap   # the original untouched

@pytest.mark.parametrize('damage,how', [('model/diffusion_pytorch_model.safetensors', 'truncated'), ('ema/diffusion_pytorch_model.safetensors', 'empty'),
                                        ('state.pt', 'truncated'), ('state.pt', 'empty')])
def test_damaged_newest_checkpoint_falls_back_to_the_previous(tmp_path, base_run, damage, how):
    run = _copy(base_run, tmp_path/'run')
    f = run/'checkpoints'/'ckpt-0000004'/damage
    f.write_bytes(f.read_bytes()[:len(f.read_bytes())//3] if how == 'truncated' else b'')
    r = cli('train', '--resume', '--out', run, '--steps', 6)
    assert r.returncode == 0, r.stderr
    warn = [l for l in r.stderr.splitlines() if l.startswith('warning:')]
    assert len(warn) == 1 and str(f) in warn[0] and 'resuming from ckpt-0000002' in warn[0], r.stderr
    assert 'from ckpt-0000002 (step 2' in r.stdout
    assert latest_checkpoint(run).name == 'ckpt-0000006'

def test_pickled_weights_are_never_loaded(tmp_path, base_run):
    run = _copy(base_run, tmp_path/'run')
    for ck in (run/'checkpoints').glob('ckpt-*'):
        m = UNet2DModel.from_pretrained(ck/'model')
        shutil.rmtree(ck/'model'); m.save_pretrained(ck/'model', safe_serialization=False)    # only diffusion_pytorch_model.bin
    line = one_line_error(cli('train', '--resume', '--out', run, '--steps', 6), 'no diffusion_pytorch_model.safetensors', 'never loaded')
    assert 'ckpt-0000004' in line and latest_checkpoint(run).name == 'ckpt-0000004'

@pytest.mark.parametrize('name,words', [('latest', 'latest: does not name a checkpoint'), ('config.json', 'config.json: not a training configuration')])
def test_garbage_run_file_is_named_then_the_fix_runs(tmp_path, base_run, name, words):
    run = _copy(base_run, tmp_path/'run')
    (run/name).write_bytes(b'\x00\xffgarbage{')
    one_line_error(cli('train', '--resume', '--out', run, '--steps', 6), str(run/name), words)
    (run/name).unlink()                                                      # the fix the message suggests
    r = cli('train', '--resume', '--out', run, '--steps', 6)
    assert r.returncode == 0, r.stderr
    assert latest_checkpoint(run).name == 'ckpt-0000006'

@pytest.mark.parametrize('opt,value,saved', [('--batch-size', 16, 8), ('--lr', 0.01, 0.001)])
def test_settings_that_shape_the_run_cannot_change_on_resume(tmp_path, base_run, opt, value, saved):
    run = _copy(base_run, tmp_path/'run')
    one_line_error(cli('train', '--resume', '--out', run, opt, value), f'{opt} is {saved!r} in {run} and cannot change on resume')
    r = cli('train', '--resume', '--out', run, opt, saved, '--steps', 6)    # the same value, or none, is fine
    assert r.returncode == 0, r.stderr

@pytest.mark.parametrize('field,value', [('steps', 'abc'), ('lr', [1]), ('batch_size', 2.5), ('class_names', 3), ('augment', 1)])
def test_mistyped_config_is_named_on_resume(tmp_path, base_run, field, value):
    "Issue 29, kind 7: wrong types in a run's config.json are one line naming the file and the field."
    run = _copy(base_run, tmp_path/'run')
    cfg = json.loads((run/'config.json').read_text())
    (run/'config.json').write_text(json.dumps({**cfg, field: value}))
    one_line_error(cli('train', '--resume', '--out', run, '--steps', 6), str(run/'config.json'), f"field {field!r} must be")

def test_resume_below_the_reached_step_is_refused(tmp_path, base_run):
    "Kind 4: --resume --steps 2 on a run at step 4 is refused and leaves its config alone."
    run = _copy(base_run, tmp_path/'run')
    before = (run/'config.json').read_text()
    one_line_error(cli('train', '--resume', '--out', run, '--steps', 2), '--steps 2', 'already at step 4')
    assert (run/'config.json').read_text() == before

def test_a_locked_run_is_refused(tmp_path, base_run):
    run = _copy(base_run, tmp_path/'run')
    with lock_held_elsewhere(run, command='a test holding the run'):
        one_line_error(cli('train', '--resume', '--out', run, '--steps', 6), 'in use by another command', 'a test holding the run')
    assert latest_checkpoint(run).name == 'ckpt-0000004'
    assert cli('train', '--resume', '--out', run, '--steps', 6).returncode == 0

def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path):
    cfg = train_config('tiny', out=str(tmp_path/'run'), steps=200, ckpt_every=1, lr=1e2, grad_clip=0, warmup=0)
    with pytest.raises(TrainingError, match='non-finite loss'): train(cfg, progress=False)
    ck = latest_checkpoint(tmp_path/'run')
    assert ck is not None
    m = UNet2DModel.from_pretrained(ck/'model')
    assert all(torch.isfinite(p).all() for p in m.parameters())

def test_batch_indices_are_lazy_and_pure():
    n = 100
    a = batch_indices(n, 250, step=3, seed=1)                   # spans three epochs
    assert len(a) == 250 and a.equal(batch_indices(n, 250, step=3, seed=1))
    assert sorted(torch.cat([batch_indices(n, 10, s) for s in range(10)]).tolist()) == list(range(n))   # one epoch covers each slice once

@pytest.mark.slow
def test_paper_preset_trains_and_resumes_at_256_px_on_the_cpu(tmp_path):
    "The paper preset (256 px, dropout 0.1) through the CLI on the CPU: 1 step, resumed to 2, 2 images with dpm-sde at 4 steps, evaluated (minutes on a 2-core CPU)."
    run = tmp_path/'paper'
    # fp32 on every CPU (bf16 falls back to fp32 where it is not native anyway; see bf16_native in chapter 12)
    args = ['--preset', 'paper', '--batch-size', 2, '--grad-accum', 1, '--ckpt-every', 1, '--log-every', 1, '--sample-every', 0, '--device', 'cpu',
            '--mixed-precision', 'no']
    r = cli('train', *args, '--out', run, '--steps', 1, timeout=3600)
    assert r.returncode == 0, r.stderr[-2000:]
    r = cli('train', '--resume', '--out', run, '--steps', 2, '--device', 'cpu', timeout=3600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert latest_checkpoint(run).name == 'ckpt-0000002' and [m['step'] for m in read_metrics(run)] == [1, 2]
    cfg = TrainConfig.from_json((run/'config.json').read_text())
    assert (cfg.preset, cfg.geometry['res'], UNet2DModel.from_pretrained(run/'model').config.sample_size) == ('paper', 256, 256)
    r = cli('sample', '--model', run, '--n', 2, '--sampler', 'dpm-sde', '--steps', 4, '--batch-size', 2, '--net-batch', 2, '--device', 'cpu', '--out', tmp_path/'fake', timeout=3600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(list((tmp_path/'fake').rglob('*.png'))) == 2
    r = cli('evaluate', '--fake', tmp_path/'fake', '--out', tmp_path/'report', '--feature', 'standin', '--offline', '--device', 'cpu', timeout=3600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path/'report'/'report.json').is_file()
