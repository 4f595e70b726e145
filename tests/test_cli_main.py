"""The entry points: `python -m mri_diffusion_nb` (what `accelerate launch -m` runs), and OS errors reported in one line."""
import os, resource, signal, subprocess, sys
from pathlib import Path
from conftest import cli

def _run(*args, **kw):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, **kw)

def test_python_m_runs_the_cli(tmp_path):
    for mod in ('mri_diffusion_nb', 'mri_diffusion_nb.cli'):
        r = _run('-m', mod, '--help')
        assert r.returncode == 0 and 'usage: mri-diffusion' in r.stdout, (mod, r.stderr)
        r = _run('-m', mod, 'sample', '--out', str(tmp_path/'x'), '--n', '-3')
        assert r.returncode == 2 and r.stderr.count('\n') == 1 and '--n' in r.stderr, (mod, r.stdout, r.stderr)

def _small_files(limit):
    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, as a full disk fails with ENOSPC
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre

def test_write_error_is_one_line_and_leaves_nothing(tmp_path):
    out = tmp_path/'samples'
    r = subprocess.run([sys.executable, '-m', 'mri_diffusion_nb', 'sample', '--model', 'demo', '--n', '2', '--steps', '2',
                        '--batch-size', '2', '--format', 'png,nifti', '--device', 'cpu', '--out', str(out)],
                       capture_output=True, text=True, timeout=600, preexec_fn=_small_files(2000),
                       env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith('mri-diffusion sample: error: ') and str(out) in last and 'Traceback' not in r.stderr, r.stderr
    assert not [p for p in out.rglob('.tmp-*')], sorted(out.rglob('*'))

def test_demo_refuses_a_bad_device_in_one_line(tmp_path):
    r = cli('demo', '--device', 'tpu', '--out', tmp_path/'d')
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and '--device' in r.stderr and 'unknown device' in r.stderr, r.stderr
    assert not (tmp_path/'d').exists()
