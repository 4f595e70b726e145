#!/usr/bin/env bash
# Slow tier: install the lowest versions settings.ini allows (every `>=` floor pinned with `==`) in a scratch venv, then import
# every module of the library and run one tiny train-sample step, so a floor the code has outgrown fails here instead of on a
# user's machine. torch and torchvision stay at this machine's build (a torch 2.1 wheel is gigabytes of CUDA, not on this disk).
#   bash tools/lowest_versions.sh [VENV_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
V=${1:-/tmp/mri-diffusion-lowest}
PY=${PYTHON:-python3}
pins=$($PY - <<'EOF'
import configparser, re
c = configparser.ConfigParser(); c.read('settings.ini')
out = []
for r in c['DEFAULT']['requirements'].split():
    m = re.match(r'^([A-Za-z0-9_.\-]+)>=([0-9][^,<]*)', r)
    if m and m.group(1) not in ('torch', 'torchvision'): out.append(f'{m.group(1)}=={m.group(2)}')
    else: out.append(r)
print(' '.join(out))
EOF
)
echo "lowest allowed: $pins"
rm -rf "$V" && $PY -m venv "$V"
"$V/bin/pip" install -q --upgrade pip
"$V/bin/pip" install -q $pins > /tmp/lowest-pip.log 2>&1 || { tail -20 /tmp/lowest-pip.log; echo "the lowest allowed versions do not install together"; exit 1; }
"$V/bin/pip" install -q --no-deps -e .
"$V/bin/pip" list 2>/dev/null | grep -i -E '^(diffusers|accelerate|torchmetrics|nibabel|nilearn|pydicom|ipywidgets|fastcore|torch) '
cd /tmp && OMP_NUM_THREADS=1 "$V/bin/python" - <<'EOF'
import importlib, pkgutil, tempfile
import mri_diffusion_nb
mods = [m.name for m in pkgutil.iter_modules(mri_diffusion_nb.__path__) if not m.name.startswith('_')]
for m in mods: importlib.import_module(f'mri_diffusion_nb.{m}')
from mri_diffusion_nb.training import train, train_config
from mri_diffusion_nb.sampling import load_model, sample
from mri_diffusion_nb.data import mni152_slices
d = tempfile.mkdtemp()
train(train_config('tiny', out=d, steps=2, ckpt_every=2, sample_every=0), data=mni152_slices(res=32), progress=False)
x = sample(load_model(d, device='cpu'), classes=[0, 1], steps=2)
assert x.shape == (2, 1, 32, 32)
print(f'imported {len(mods)} modules, trained 2 steps and sampled {len(x)} images with the lowest allowed versions')
EOF
