"""Shared fixtures: small real NIfTI volumes written with nibabel, and a way to run the CLI as a user does."""
import os, subprocess, sys
from pathlib import Path
import numpy as np
import nibabel as nib
import pytest

REPO = Path(__file__).resolve().parents[1]

def cli(*args, timeout=600, env=None):
    "Run `mri-diffusion ARGS` in a fresh process (the installed console script when there is one)."
    exe = Path(sys.executable).parent/'mri-diffusion'
    cmd = [str(exe)] if exe.exists() else [sys.executable, '-c', 'import sys; from mri_diffusion_nb.cli import main; sys.exit(main())']
    e = dict(os.environ, PYTHONWARNINGS='ignore', **(env or {}))
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=e)

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
