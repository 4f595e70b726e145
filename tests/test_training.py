"""Chapter 03 from the outside: `mri-diffusion train` end to end, a real kill and resume, two processes, bad configurations."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest
import torch
from conftest import cli, REPO
from diffusers import UNet2DModel
from mri_diffusion_nb.training import TrainConfig, TrainingError, latest_checkpoint, read_metrics, train, train_config, weights_hash
from mri_diffusion_nb.data import mni152_slices, save_cache

def _max_diff(a, b):
    ma, mb = UNet2DModel.from_pretrained(a), UNet2DModel.from_pretrained(b)
    return max((p - q).abs().max().item() for p, q in zip(ma.parameters(), mb.parameters()))

def test_tiny_trains_and_loss_falls(tmp_path):
    r = cli('train', '--preset', 'tiny', '--out', tmp_path/'run', '--steps', 150, '--ckpt-every', 50, '--sample-every', 0)
    assert r.returncode == 0, r.stderr
    run = tmp_path/'run'
    assert f'wrote {run}' in r.stdout
    for sub in ('model', 'ema', 'scheduler', 'config.json', 'metrics.jsonl', 'latest'): assert (run/sub).exists(), sub
    assert list((run/'model').glob('*.safetensors')) and not list(run.rglob('*.bin'))
    losses = [m['loss'] for m in read_metrics(run)]
    assert len(losses) == 15 and all(map(lambda l: l == l, losses))
    assert sum(losses[-3:])/3 < 0.7*sum(losses[:3])/3, losses
    assert (run/'samples'/'step-0000150.png').exists()      # the end-of-run grid from chapter 04's sampler
    cfg = TrainConfig.from_json((run/'config.json').read_text())
    assert cfg.class_names == mni152_slices(res=32).class_names

def test_killed_run_resumes_to_the_same_weights(tmp_path):
    args = ['--preset', 'tiny', '--steps', 60, '--ckpt-every', 10, '--sample-every', 0]
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
    r = cli('train', '--resume', '--out', tmp_path/'killed')
    assert r.returncode == 0, r.stderr
    assert 'resuming' in r.stdout
    assert _max_diff(tmp_path/'whole'/'model', tmp_path/'killed'/'model') < 1e-5
    assert _max_diff(tmp_path/'whole'/'ema', tmp_path/'killed'/'ema') < 1e-5
    assert [m['step'] for m in read_metrics(tmp_path/'killed')] == [m['step'] for m in read_metrics(tmp_path/'whole')]


def test_two_processes_end_with_identical_weights(tmp_path):
    worker = tmp_path/'worker.py'
    worker.write_text(
        "import os, sys\n"
        "from pathlib import Path\n"
        "from mri_diffusion_nb.training import train, train_config, weights_hash\n"
        "from diffusers import UNet2DModel\n"
        "out = Path(sys.argv[1])\n"
        "hashes = {}\n"
        "train(train_config('tiny', out=str(out/'run'), steps=8, batch_size=8, ckpt_every=8, log_every=4), progress=False, on_end=lambda m: hashes.update(h=weights_hash(m)))\n"
        "(out/f\"rank{os.environ['RANK']}.txt\").write_text(hashes['h'] + ' ' + os.environ['WORLD_SIZE'])\n")
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29517', str(worker), str(tmp_path)],
                       capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert r.returncode == 0, r.stderr[-3000:]
    h0, h1 = (tmp_path/'rank0.txt').read_text(), (tmp_path/'rank1.txt').read_text()
    assert h0 == h1 and h0.endswith(' 2')
    assert h0.split()[0] == weights_hash(UNet2DModel.from_pretrained(tmp_path/'run'/'model'))

@pytest.mark.parametrize('args,words', [
    (['--preset', 'huge'], "invalid choice: 'huge'"),
    (['--data', 'nowhere.safetensors'], 'nowhere.safetensors: data file not found'),
    (['--batch-size', '0'], 'batch_size must be at least 1'),
    (['--resume'], 'no complete checkpoint to resume from'),
])
def test_bad_configuration_is_refused_in_one_line(tmp_path, args, words):
    r = cli('train', '--out', tmp_path/'run', *args)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and 'Traceback' not in r.stderr, r.stderr
    assert not (tmp_path/'run').exists()

def test_wrong_resolution_is_refused(tmp_path):
    save_cache(mni152_slices(res=64), tmp_path/'mni64.safetensors')
    r = cli('train', '--preset', 'tiny', '--data', tmp_path/'mni64.safetensors', '--out', tmp_path/'run')
    assert r.returncode != 0 and 'slices are 64 px but preset' in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path/'run').exists()

def test_existing_run_is_not_overwritten(tmp_path):
    assert cli('train', '--out', tmp_path/'run', '--steps', 5, '--ckpt-every', 5, '--sample-every', 0).returncode == 0
    before = (tmp_path/'run'/'latest').read_text()
    r = cli('train', '--out', tmp_path/'run', '--steps', 5)
    assert r.returncode != 0 and 'already holds a run' in r.stderr
    assert (tmp_path/'run'/'latest').read_text() == before

def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path):
    cfg = train_config('tiny', out=str(tmp_path/'run'), steps=200, ckpt_every=1, lr=1e6, grad_clip=0, warmup=0)
    with pytest.raises(TrainingError, match='non-finite loss'): train(cfg, progress=False)
    ck = latest_checkpoint(tmp_path/'run')
    assert ck is not None
    m = UNet2DModel.from_pretrained(ck/'model')
    assert all(torch.isfinite(p).all() for p in m.parameters())
