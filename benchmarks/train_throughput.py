"""Training throughput: this project's loop against a plain fp32 PyTorch + diffusers loop on the same U-Net, side by side in one run.

    python benchmarks/train_throughput.py [--preset demo] [--steps 30] [--rounds 2] [--device cuda|cpu] [--compile]

Each variant trains the same preset on the same built-in slices, on the same device (`--device`; default a GPU when there is one, else the CPU:
`train(device=...)` and the plain loop both run there, and the device printed is that one); rounds alternate
the variants so that drift in machine load hits them alike. Images/s come from wall-clock time over the timed steps (after warm-up steps), with
`torch.cuda.synchronize()` around GPU timings (our loop logs every step, which reads the loss back and so waits for the GPU).
Peak memory: on a GPU, `torch.cuda.max_memory_allocated` per variant; on a CPU, one training step (fp32 and bf16) measured in a fresh subprocess
by `mri_diffusion_nb.unet.train_step_peak_rss` (peak resident memory above the level before the model is built).
Prints a table and the ratios against the plain loop.
"""
import argparse, json, sys, tempfile, time, os
from pathlib import Path
import torch
import torch.nn.functional as F
from mri_diffusion_nb.data import mni152_slices
from mri_diffusion_nb.unet import build_unet, get_preset, train_step_peak_rss
from mri_diffusion_nb.schedule import NoiseSchedule
from mri_diffusion_nb.training import train, train_config, read_metrics

DEV = torch.device('cuda' if torch.cuda.is_available() else 'cpu')   # set from --device in main(): both loops run there

def sync():
    if DEV.type == 'cuda': torch.cuda.synchronize(DEV)

def plain_loop(preset, data, steps, warm, batch):
    "The baseline a newcomer writes: fp32, default memory format, torch.optim.AdamW defaults, one forward per step, on the same device."
    torch.manual_seed(0)
    model = build_unet(preset, n_classes=data.n_classes).to(DEV).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    abar = NoiseSchedule().abar.to(DEV)
    x_all, y_all = data.images, data.labels
    g = torch.Generator().manual_seed(0)
    def step():
        idx = torch.randint(0, len(x_all), (batch,), generator=g)
        x0, y = x_all[idx].to(DEV), y_all[idx].to(DEV)
        t = torch.randint(0, 1000, (batch,), device=DEV)
        eps = torch.randn(x0.shape, device=DEV)
        a = abar[t].view(-1, 1, 1, 1)
        xt = a.sqrt()*x0 + (1 - a).sqrt()*eps
        loss = F.mse_loss(model(xt, t, class_labels=y).sample, eps)
        opt.zero_grad(); loss.backward(); opt.step()
    for _ in range(warm): step()
    sync(); t0 = time.perf_counter()
    for _ in range(steps): step()
    sync()
    return steps*batch/(time.perf_counter() - t0)

def our_loop(preset, data, steps, warm, batch, **over):
    "This project's `train` (Accelerate, DataLoader, label dropout, EMA, grad clipping, bf16 autocast, channels_last, foreach/fused AdamW, logging)."
    with tempfile.TemporaryDirectory() as d:
        cfg = train_config(preset, out=f'{d}/run', steps=warm + steps, batch_size=batch, log_every=1, ckpt_every=10**9,
                           sample_every=0, warmup=0, augment=False, **over)
        train(cfg, data=data, progress=False, device=DEV.type)
        t = [r['time'] for r in read_metrics(f'{d}/run')]  # one record per step
        return steps*batch*over.get('grad_accum', 1)/(t[-1] - t[warm - 1])

def main():
    global DEV
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--preset', default='demo'); ap.add_argument('--steps', type=int, default=30); ap.add_argument('--warm', type=int, default=5)
    ap.add_argument('--rounds', type=int, default=2); ap.add_argument('--batch', type=int, default=None); ap.add_argument('--compile', action='store_true')
    ap.add_argument('--device', choices=['cuda', 'cpu'], default=DEV.type, help='where both loops run (default: cuda when available)')
    a = ap.parse_args()
    DEV = torch.device(a.device)
    if DEV.type == 'cuda' and not torch.cuda.is_available(): ap.error('--device cuda: CUDA is not available')
    p = get_preset(a.preset); batch = a.batch or p.batch_size
    data = mni152_slices(res=p.res).train
    variants = {
        'plain fp32 loop': lambda: plain_loop(a.preset, data, a.steps, a.warm, batch),
        'ours, fp32': lambda: our_loop(a.preset, data, a.steps, a.warm, batch, mixed_precision='no', channels_last=False),
        'ours, bf16 autocast (demo and paper default)': lambda: our_loop(a.preset, data, a.steps, a.warm, batch, mixed_precision='bf16', channels_last=False),
        'ours, bf16 + channels_last': lambda: our_loop(a.preset, data, a.steps, a.warm, batch, mixed_precision='bf16', channels_last=True),
    }
    variants['ours, bf16, half batch x 2 accumulation'] = lambda: our_loop(a.preset, data, a.steps, a.warm, batch//2, grad_accum=2, mixed_precision='bf16', channels_last=False)
    if a.compile: variants['ours, bf16 + channels_last + compile'] = lambda: our_loop(a.preset, data, a.steps, a.warm, batch, mixed_precision='bf16', channels_last=True, compile=True)
    res, peak = {k: [] for k in variants}, {}
    for r in range(a.rounds):
        for k, f in variants.items():
            if DEV.type == 'cuda': torch.cuda.reset_peak_memory_stats(DEV)
            res[k].append(f())
            if DEV.type == 'cuda': peak[k] = torch.cuda.max_memory_allocated(DEV)/2**20
            print(f"round {r + 1} {k}: {res[k][-1]:.1f} img/s", file=sys.stderr)
    dev = f"{torch.cuda.get_device_name(DEV)} (cuda)" if DEV.type == 'cuda' else f"CPU, {torch.get_num_threads()} threads"
    print(f"\ntraining throughput, preset {a.preset} ({p.res} px), batch {batch}, {a.steps} timed steps x {a.rounds} rounds, {dev}, torch {torch.__version__}")
    base = max(res['plain fp32 loop'])
    print(f"{'variant':<44} {'img/s (best)':>12} {'vs plain':>9}" + (f" {'peak MB':>8}" if peak else ''))
    for k, v in res.items(): print(f"{k:<44} {max(v):>12.1f} {max(v)/base:>8.2f}x" + (f" {peak[k]:>8.0f}" if peak else ''))
    if not peak:
        m = build_unet(a.preset, n_classes=data.n_classes)
        mem = {bf: train_step_peak_rss(m, batch_size=batch, bf16=bf)/2**20 for bf in (False, True)}
        print(f"CPU peak memory of one training step at batch {batch} (fresh subprocess, above the pre-model level): fp32 {mem[False]:.0f} MB, bf16 autocast {mem[True]:.0f} MB")

if __name__ == '__main__': main()
