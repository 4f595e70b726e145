"""Class adherence at guidance 7 by sampler (DPM-Solver++-20, DDIM-50, DDPM-1000) for the shipped demo model, with its model card classifier.

    OMP_NUM_THREADS=1 python benchmarks/sampler_adherence.py   # about 10 minutes on one CPU core
"""
import json, time
from pathlib import Path
import torch
import mri_diffusion_nb
from mri_diffusion_nb.sampling import load_model, sample
from mri_diffusion_nb.metrics import load_classifier, class_adherence
m = load_model('demo'); clf = load_classifier(Path(mri_diffusion_nb.__file__).parent/'assets'/'demo'/'classifier.safetensors')
cl = torch.arange(4).repeat_interleave(4)
out = {}
for s, n in (('dpm', 20), ('ddim', 50), ('ddpm', 1000)):
    t0 = time.time(); x = sample(m, classes=cl, guidance=7.0, sampler=s, steps=n, seed=0, autocast=True, batch_size=16)
    ca = class_adherence(clf, x, cl); out[f'{s}-{n}'] = dict(acc=ca['accuracy'], per=[round(v['accuracy'], 2) for v in ca['per_class'].values()], s=round(time.time() - t0))
    print(s, n, out[f'{s}-{n}'], flush=True)
print(json.dumps(out))
