"""Shared fixtures: small real NIfTI volumes written with nibabel, the CLI run in this process or launched, the one-line error check."""
import contextlib, io, os, shutil, subprocess, sys, traceback, warnings
from pathlib import Path
import numpy as np
import nibabel as nib
import pytest

REPO = Path(__file__).resolve().parents[1]

if os.environ.get('PYTEST_XDIST_WORKER_COUNT'):   # pytest -n N: each worker gets its share of the cores (no oversubscription)
    import torch
    torch.set_num_threads(max(1, (os.cpu_count() or 1)//int(os.environ['PYTEST_XDIST_WORKER_COUNT'])))

# The browser tests (JupyterLab widgets, the reader-study page) drive Debian's chromium through Playwright's Python package: no browser download.
CHROMIUM = shutil.which('chromium') or ('/usr/bin/chromium' if Path('/usr/bin/chromium').exists() else None)
try:
    import playwright.sync_api as _pw
except ImportError: _pw = None
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run',
                 '--disable-dev-shm-usage']
needs_browser = [pytest.mark.browser, pytest.mark.slow,
                 pytest.mark.skipif(CHROMIUM is None, reason='no chromium browser installed (Debian package `chromium`)'),
                 pytest.mark.skipif(_pw is None, reason='the playwright Python package is not installed')]

@pytest.fixture(scope='module')
def browser():
    "One headless chromium per test module."
    with _pw.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try: yield b
        finally: b.close()

def free_port()->int:
    "A free TCP port on 127.0.0.1 (a fresh one per launch: the last one may still be in TIME_WAIT, and xdist workers run side by side)."
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

class Result:
    "What a CLI run returned: exit status, stdout and stderr (the fields of `subprocess.CompletedProcess` the tests read)."
    def __init__(self, returncode, stdout, stderr): self.returncode, self.stdout, self.stderr = returncode, stdout, stderr

def cli(*args, env=None, timeout=None):
    """Run `mri-diffusion ARGS` in this process, as the console script would: stdout, stderr and the exit status.
    In-process saves the 8 s of imports a launch costs; `test_cli_main.py` launches the real console script once per subcommand."""
    from mri_diffusion_nb.cli import main
    out, err = io.StringIO(), io.StringIO()
    env = {k: str(v) for k, v in (env or {}).items()}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter('ignore')                      # as PYTHONWARNINGS=ignore did for the launched script
            try: code = main([str(a) for a in args])
            except SystemExit as e: code = e.code if isinstance(e.code, int) else int(e.code is not None)   # argparse exits
            except Exception:                                    # what the console script would print before exiting 1
                traceback.print_exc(); code = 1
    finally:
        for k, v in saved.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v
    return Result(code, out.getvalue(), err.getvalue())

def one_line_error(r, *words, status=2):
    "Exit status 2 and exactly one stderr line, no traceback, containing every word; returns the line."
    lines = r.stderr.strip().splitlines()
    assert r.returncode == status, r.stderr[-2000:]
    assert len(lines) == 1 and 'Traceback' not in r.stderr, r.stderr[-2000:]
    for w in words: assert w in lines[0], lines[0]
    return lines[0]

_HOLDER = """
import fcntl, json, os, socket, sys, time
fd = os.open(os.path.join(sys.argv[1], '.lock'), os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.ftruncate(fd, 0)
os.pwrite(fd, json.dumps(dict(pid=os.getpid(), host=socket.gethostname(), command=sys.argv[2],
                              since=time.strftime('%Y-%m-%d %H:%M:%S'))).encode(), 0)
print('held', flush=True)
sys.stdin.read()
"""

@contextlib.contextmanager
def lock_held_elsewhere(folder, command='a test holding it'):
    "Hold `folder`'s output lock from another process (the lock is re-entrant within one), as `files.output_lock` writes it."
    folder = Path(folder); folder.mkdir(parents=True, exist_ok=True)
    p = subprocess.Popen([sys.executable, '-c', _HOLDER, str(folder), command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == 'held'
        yield folder
    finally:
        p.stdin.close(); p.wait(timeout=30)

def shared(tmp_path_factory, name, make):
    "A folder made once per test session, across pytest-xdist workers: `make(folder)` fills it the first time; tests only read it."
    from filelock import FileLock
    root = tmp_path_factory.getbasetemp()
    if os.environ.get('PYTEST_XDIST_WORKER'): root = root.parent   # the workers' common parent
    folder = root/'shared'/name
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + '.lock'):
        if not (folder/'.done').exists():
            shutil.rmtree(folder, ignore_errors=True); folder.mkdir()
            make(folder); (folder/'.done').touch()
    return folder

@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory):
    "A tiny model trained for 10 steps (checkpoint at 10): sampling and evaluation plumbing need weights, not quality."
    def make(d):
        from mri_diffusion_nb.training import train, train_config
        from mri_diffusion_nb.data import mni152_slices
        train(train_config('tiny', out=str(d/'run'), steps=10, ckpt_every=10), data=mni152_slices(res=32), progress=False)
    return shared(tmp_path_factory, 'tiny_run', make)/'run'

@pytest.fixture(scope='session')
def demo_fake(tmp_path_factory):
    "8 slices from the shipped demo model (dpm-sde, 4 steps: fast, not pretty) with their manifest, as `sample` writes them."
    def make(d):
        r = cli('sample', '--model', 'demo', '--n', 8, '--steps', 4, '--bf16', '--out', d/'fake')
        assert r.returncode == 0, r.stderr
    return shared(tmp_path_factory, 'demo_fake', make)/'fake'

@pytest.fixture(scope='session')
def mni_small():
    "The MNI152 template from nilearn at 3 mm: real anatomy, small enough for fast tests."
    from mri_diffusion_nb.data import load_volume, mni152_path
    v = load_volume(mni152_path())
    return v.data[::3, ::3, ::3].copy()

def write_cohort(folder, base, n=6, seed=0, nested=False):
    "Write `n` subjects (jittered copies of `base`, 3 mm) and a labels CSV; returns the CSV path."
    rng = np.random.default_rng(seed)
    folder = Path(folder); folder.mkdir(parents=True, exist_ok=True)
    rows = ['subject,class']
    for i in range(n):
        v = np.roll(base, int(rng.integers(-2, 3)), axis=0)*rng.uniform(200, 900) + rng.normal(0, 2, base.shape)
        name = f'sub-{i:02d}'
        f = folder/name/f'{name}_t1.nii.gz' if nested else folder/f'{name}.nii.gz'
        f.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(v.astype(np.float32), np.diag([3., 3, 3, 1])), f)
        rows.append(f"{name},{'tumour' if i % 2 else 'healthy'}")
    csv = folder.parent/f'{folder.name}_labels.csv'
    csv.write_text('\n'.join(rows) + '\n')
    return csv

# --- IXI-like and BraTS-like folders (the data engineer's fixtures; issue 12) ---

def _regrid(base, zooms, src=3.):
    "Resample `base` (isotropic `src` mm) to voxel sizes `zooms` with linear interpolation."
    from scipy.ndimage import zoom
    return zoom(base, [src/z for z in zooms], order=1).astype(np.float32)

def write_ixi(folder, base, n=6, seed=0):
    "IXI-like flat folder: anisotropic voxels, different fields of view, LAS and oblique affines, and a demographics CSV."
    rng = np.random.default_rng(seed)
    folder = Path(folder); folder.mkdir(parents=True, exist_ok=True)
    rows, ages = ['subject,AGE,SEX_ID'], [25.5, 34, 47.2, 58, 66.1, 77, 30, 62][:n]
    for i in range(n):
        zooms = [(3.6, 2.82, 2.82), (3., 3., 3.), (2.82, 3.6, 2.82)][i % 3]
        v = _regrid(base, zooms)*rng.uniform(200, 900)
        v = np.pad(v, [(int(rng.integers(0, 8)), int(rng.integers(0, 8)))]*3)      # different fields of view
        aff = np.diag([*zooms, 1.]); aff[:3, 3] = -np.array(v.shape)*zooms/2
        if i % 3 == 1:                                                            # LAS
            flip = np.diag([-1., 1, 1, 1]); flip[0, 3] = v.shape[0] - 1; v, aff = v[::-1].copy(), aff @ flip
        if i % 3 == 2:                                                            # oblique: 12 degrees about S
            t = np.deg2rad(12); r = np.eye(4); r[:2, :2] = [[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]; aff = r @ aff
        name = f'IXI{i:03d}-Guys-{1000 + i}-T1'
        nib.save(nib.Nifti1Image(v, aff), folder/f'{name}.nii.gz')
        rows.append(f'IXI{i:03d},{ages[i]},{1 + i % 2}')
    csv = folder.parent/'IXI_demographics.csv'
    csv.write_text('\n'.join(rows) + '\n')
    return csv

def write_brats(root, base, n=4, radius=4, seed=0):
    "BraTS-like folder `root/S/S_{t1,t1ce,t2,flair,seg}.nii.gz` (3 mm); odd subjects have a tumour ball of `radius` voxels. Returns {subject: ball centre or None}."
    rng = np.random.default_rng(seed); aff = np.diag([3., 3, 3, 1]); out = {}
    g = np.meshgrid(*[np.arange(k) for k in base.shape], indexing='ij')
    for i in range(n):
        s = f'BraTS_{i:03d}'; (Path(root)/s).mkdir(parents=True, exist_ok=True)
        seg, c = np.zeros(base.shape, np.int16), None
        if i % 2:
            c = [k//2 + int(rng.integers(-3, 4)) for k in base.shape]
            seg[sum((a - b)**2 for a, b in zip(g, c)) <= radius**2] = 4
        for m, v in dict(t1=base*500, t1ce=base*600, t2=(base.max() - base)*400, flair=base*300, seg=seg).items():
            nib.save(nib.Nifti1Image(np.asarray(v, np.int16 if m == 'seg' else np.float32), aff), Path(root)/s/f'{s}_{m}.nii.gz')
        out[s] = c
    return out

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    "Tests marked `slow` (minutes on a 2-core CPU) run only with RUN_SLOW=1: the slow tier. Checked before any missing-tool skip."
    if 'slow' in item.keywords and os.environ.get('RUN_SLOW') != '1': pytest.skip('slow tier: set RUN_SLOW=1 to run it')
