"""Sampling throughput: DDPM-1000, DDIM-50, DPM-Solver++-20 (ODE and SDE), batched against unbatched guidance, and the U-Net's forward-pass bound, side by side in one run.

    python benchmarks/sample_throughput.py [--model demo|RUN_DIR] [--n 16] [--ddpm-steps 1000] [--device cuda|cpu]

The forward-pass bound is images/s of bare batched guided forward passes (a batch of 2n through the U-Net, no scheduler) divided by the number of steps:
no sampler can beat it. Prints images/s, network evaluations per image, and ratios.
"""
import argparse, sys, time
import torch
from mri_diffusion_nb.sampling import load_model, sample
from mri_diffusion_nb.unet import null_class

def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)

def timed(f, dev, reps=1):
    "Best wall time of `reps` calls, with the GPU's queue drained before and after each."
    best = float('inf')
    for _ in range(reps):
        sync(dev); t0 = time.perf_counter(); f(); sync(dev); best = min(best, time.perf_counter() - t0)
    return best

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--model', default='demo'); ap.add_argument('--n', type=int, default=16)
    ap.add_argument('--ddpm-steps', type=int, default=1000); ap.add_argument('--reps', type=int, default=2)
    ap.add_argument('--device', help='cuda or cpu (default: cuda when available)')
    a = ap.parse_args()
    m = load_model(a.model, device=a.device)
    dev = m.device
    n = a.n; classes = torch.arange(n, device=dev) % m.n_classes
    x = torch.randn(2*n, 1, m.res, m.res, device=dev); y = torch.cat([classes, torch.full_like(classes, null_class(m.unet))])
    with torch.no_grad():
        m.unet(x, 500, class_labels=y)
        fwd = timed(lambda: m.unet(x, 500, class_labels=y), dev, reps=3)          # one guided step for n images
    rows = []
    for sampler, steps in (('ddpm', a.ddpm_steps), ('ddim', 50), ('dpm', 20), ('dpm-sde', 20)):
        s = timed(lambda: sample(m, classes=classes, guidance=7.0, sampler=sampler, steps=steps, batch_size=n, net_batch=n), dev, reps=1 if sampler == 'ddpm' else a.reps)
        rows.append((f"{sampler}-{steps}", steps, n/s, n/(fwd*steps)))
        print(f"{sampler}-{steps}: {n/s:.2f} img/s", file=sys.stderr)
    s_a = timed(lambda: sample(m, classes=classes, guidance=7.0, sampler='dpm-sde', steps=20, batch_size=n, net_batch=n, autocast=True), dev, reps=a.reps)
    rows.append(("dpm-sde-20 bf16", 20, n/s_a, n/(fwd*20)))
    s_b = timed(lambda: sample(m, classes=classes, guidance=7.0, sampler='ddim', steps=50, batch_size=n, net_batch=n), dev, reps=a.reps)
    s_u = timed(lambda: sample(m, classes=classes, guidance=7.0, sampler='ddim', steps=50, batch_size=n, net_batch=n, batched_guidance=False), dev, reps=a.reps)
    where = f"GPU {torch.cuda.get_device_name(dev)}" if dev.type == 'cuda' else f"CPU, {torch.get_num_threads()} threads"
    print(f"\nsampling throughput, model {a.model} ({m.res} px, hash {m.hash}), {n} images per batch and per U-Net call, guidance 7.0, on {where}, torch {torch.__version__}")
    print(f"{'sampler':<16} {'NFE/img':>8} {'img/s':>9} {'bound img/s':>12} {'of bound':>9}")
    for name, steps, ips, bound in rows: print(f"{name:<16} {2*steps:>8} {ips:>9.2f} {bound:>12.2f} {ips/bound:>8.0%}")
    print(f"\nguidance, DDIM-50: batched (one forward of 2n) {n/s_b:.2f} img/s, unbatched (two forwards of n) {n/s_u:.2f} img/s, ratio {s_u/s_b:.2f}x")
    print("(the bound is for fp32 forward passes; bf16 autocast can beat it)")
    print(f"DPM-Solver++-20 vs DDPM-{a.ddpm_steps}: {rows[2][2]/rows[0][2]:.1f}x (ODE), {rows[3][2]/rows[0][2]:.1f}x (SDE) the images/s at {a.ddpm_steps/20:.0f}x fewer network evaluations")

if __name__ == '__main__': main()
