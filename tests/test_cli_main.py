"""The entry points as a user starts them: the installed `mri-diffusion` console script once per subcommand, `python -m mri_diffusion_nb`
(what `accelerate launch -m` runs), and OS errors reported in one line. Every other CLI case runs in-process (conftest `cli`)."""
import os, resource, signal, subprocess, sys
from pathlib import Path
from conftest import cli, one_line_error

def _run(*args, **kw):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, **kw)

def test_python_m_runs_the_cli(tmp_path):
    "Both modules run the CLI: help, and a bad option in one line (the four launches side by side)."
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    runs = {(mod, what): subprocess.Popen([sys.executable, '-m', mod, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for mod in ('mri_diffusion_nb', 'mri_diffusion_nb.cli')
            for what, args in (('help', ['--help']), ('error', ['sample', '--out', str(tmp_path/'x'), '--n', '-3']))}
    for (mod, what), p in runs.items():
        out, err = p.communicate(timeout=600)
        if what == 'help': assert p.returncode == 0 and 'usage: mri-diffusion' in out, (mod, err)
        else: assert p.returncode == 2 and err.count('\n') == 1 and '--n' in err, (mod, out, err)
    assert not (tmp_path/'x').exists()

def test_help_and_bad_options_need_no_torch(capsys):
    "`--help` and an argparse error load neither torch nor diffusers (their time is printed; the goal is under 1 s here)."
    import time
    code = ("import sys, time; t = time.perf_counter(); from mri_diffusion_nb.cli import main\n"
            "try: main(sys.argv[1:])\nexcept SystemExit as e: s = e.code\n"
            "print(time.perf_counter() - t, any(m.split('.')[0] in ('torch', 'diffusers') for m in sys.modules))")
    for args in (['--help'], ['train', '--preset', 'nope', '--out', 'x'], ['sample', '--sampler']):
        t0 = time.perf_counter()
        r = _run('-c', code, *args, env=dict(os.environ, OMP_NUM_THREADS='1'))
        wall = time.perf_counter() - t0
        inproc, heavy = r.stdout.split()[-2:]
        assert heavy == 'False', (args, r.stdout, r.stderr)
        assert (r.stderr.count('\n') == 1 and 'error:' in r.stderr) if args != ['--help'] else 'usage:' in r.stdout
        with capsys.disabled(): print(f"\nmri-diffusion {' '.join(args)}: {wall:.2f} s in a fresh process ({float(inproc):.2f} s in main)")

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

LAUNCHES = {  # one bad input per subcommand: the real script parses, imports everything, and fails in one line
    'data': (['data', '--source', 'nowhere.nii.gz', '--out', 'c.safetensors'], 'nowhere.nii.gz'),
    'population': (['population', '--n', '0', '--out', 'p'], '--n must be at least 1'),
    'train': (['train', '--preset', 'tiny', '--batch-size', '0', '--out', 'run'], 'batch_size must be between 1'),
    'sample': (['sample', '--model', 'demo', '--n', '0', '--out', 's'], '--n must be'),
    'evaluate': (['evaluate', '--fake', 'nothing', '--out', 'rep'], 'nothing'),
    'reader-study': (['reader-study', 'make', '--fake', 'nothing', '--n', '7', '--out', 'st'], '--n must be an even'),
    'utility': (['utility', '--fake', 'nothing', '--out', 'u', '--seeds', '0'], '--seeds'),
    'demo': (['demo', '--device', 'tpu', '--out', 'd'], 'unknown device'),
}

def test_console_script_once_per_subcommand(tmp_path):
    "The installed console script, launched for every subcommand at once (2 cores share 7 interpreter starts)."
    exe = Path(sys.executable).parent/'mri-diffusion'
    assert exe.exists(), 'pip install -e . installs the mri-diffusion console script'
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    procs = {k: subprocess.Popen([str(exe), *a], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for k, (a, _) in LAUNCHES.items()}
    for k, p in procs.items():
        out, err = p.communicate(timeout=600)
        one_line_error(subprocess.CompletedProcess(p.args, p.returncode, out, err), f'mri-diffusion {k}: error:', LAUNCHES[k][1])
    assert sorted(p.name for p in tmp_path.iterdir()) == []                  # nothing written by any of them
