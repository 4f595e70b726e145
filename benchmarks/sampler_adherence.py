"""Class adherence at guidance 7 by sampler, side by side in one run: DPM-Solver++-20 (ODE and SDE), DDIM-50 (eta 0 and 1; and eta 0 with diffusers' default raw ε), DDPM-1000,
for the shipped demo model (or a run directory), scored by the model card's classifier.

    OMP_NUM_THREADS=1 python benchmarks/sampler_adherence.py [--model demo] [--per-class 8] [--skip-ddpm]   # DDPM-1000 at 8 per class: ~30 min on one core

Same seed (same initial noise) for every sampler, bf16 autocast for the U-Net. Prints per-class adherence, seconds, and each sampler's gap to DDPM-1000 in points.
"""
import argparse, json, time
from pathlib import Path
from contextlib import contextmanager
import torch
from diffusers import DDIMScheduler
from mri_diffusion_nb.sampling import find_weights, load_model, sample
from mri_diffusion_nb.adherence import load_classifier, class_adherence

@contextmanager
def raw_eps(on:bool):
    "DDIM as diffusers does by default: x_0 clipped, but the next step uses the network's raw ε (`use_clipped_model_output=False`)."
    step = DDIMScheduler.step
    def patched(self, *a, **k): return step(self, *a, **{**k, 'use_clipped_model_output': False})
    if on: DDIMScheduler.step = patched
    try: yield
    finally: DDIMScheduler.step = step

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--model', default='demo'); ap.add_argument('--per-class', type=int, default=8)
    ap.add_argument('--classifier', help='classifier safetensors (default: the demo model card classifier)')
    ap.add_argument('--guidance', type=float, default=7.0); ap.add_argument('--skip-ddpm', action='store_true')
    a = ap.parse_args()
    m = load_model(a.model)
    clf = load_classifier(a.classifier or find_weights('demo')[0].parent/'classifier.safetensors')
    cl = torch.arange(m.n_classes).repeat_interleave(a.per_class)
    configs = [('dpm', 20, 0.0), ('dpm-sde', 20, 0.0), ('ddim', 50, 0.0), ('ddim', 50, 1.0), ('ddim-raw', 50, 0.0)] + ([] if a.skip_ddpm else [('ddpm', 1000, 0.0)])
    out = {}
    print(f"class adherence at w = {a.guidance:g}, model {a.model} (hash {m.hash}), {a.per_class} per class, seed 0, bf16 autocast, {torch.get_num_threads()} threads", flush=True)
    for s, n, eta in configs:
        name = f"{s}-{n}" + (f" eta={eta:g}" if s.startswith('ddim') else '')
        t0 = time.time()
        with raw_eps(s == 'ddim-raw'):
            x = sample(m, classes=cl, guidance=a.guidance, sampler=s.replace('-raw', ''), steps=n, eta=eta, seed=0, autocast=True, batch_size=32)
        ca = class_adherence(clf, x, cl)
        out[name] = dict(accuracy=ca['accuracy'], per_class=[v['accuracy'] for v in ca['per_class'].values()], nfe=2*n, seconds=time.time() - t0)
        print(f"{name:<20} NFE {2*n:>5}  adherence {ca['accuracy']:6.1%}  per class " + ' / '.join(f"{v:.0%}" for v in out[name]['per_class']) + f"  {out[name]['seconds']:.0f} s", flush=True)
    if 'ddpm-1000' in out:
        ref = out['ddpm-1000']['accuracy']
        for k, v in out.items():
            if k != 'ddpm-1000': print(f"{k:<20} gap to DDPM-1000: {100*(v['accuracy'] - ref):+.1f} points at {1000/int(k.split('-')[-1].split()[0]):.0f}x fewer network evaluations")
    print(json.dumps(out))

if __name__ == '__main__': main()
