"""ε- vs v-prediction, linear vs cosine schedule: the tiny preset trained four ways on the same slices, x̂0 error on held-out slices.

    OMP_NUM_THREADS=2 python benchmarks/objectives.py [--steps 300] [--noises 8] [--out nbs/objectives.json]

Every run trains the `tiny` training preset (32 px U-Net) on the built-in MNI152 slices' training split with the same seed, so the
four runs start from the same weights and see the same batches, timesteps and noise; only the target (ε or v) and the beta schedule
differ. Runs go to a temporary folder outside the repository and are deleted afterwards.

The metric is the clean-image error of the EMA weights on the held-out ('val') slices: for each slice, its own class label, and
`--noises` fixed noise draws (the same for every run), x_t = √ᾱ x0 + √(1-ᾱ) ε at three noise levels, x̂0 from the network's output
(`NoiseSchedule.pred_x0`, clipped to [-1, 1] as the samplers clip it), and MSE(x̂0, x0) over the pixels, averaged over the draws:
one number per slice. The noise levels are the linear schedule's ᾱ_t at t = 100, 500 and 900; the cosine runs are asked at their own
timestep whose ᾱ is nearest (the same x_t, the timestep the network was trained to expect there). Each cell reports the mean over
slices with a 95 % t-interval over slices; ratios against ε/linear use a paired bootstrap over slices (same slices, same noise).
The intervals cover held-out slices and noise draws, not training randomness (one training seed per configuration).

Train time is wall-clock seconds (and process CPU seconds) of `train`; the 1-minute load average before and after each run is
recorded, because other work on a shared machine slows the wall clock without changing any error measured here.

Writes the protocol and the rows to `--out` (JSON) and prints a table and the ratios. The protocol also records the prediction
target, schedule and learning rate of every training preset (`presets`), which chapter 15 compares with the theory without importing
chapter 16; `--presets-only` refreshes that block of an existing file without training.
"""
import argparse, json, math, os, platform, tempfile, time
from pathlib import Path
import numpy as np
import torch
from scipy import stats
from diffusers import UNet2DModel
from mri_diffusion_nb.data import mni152_slices
from mri_diffusion_nb.schedule import NoiseSchedule
from mri_diffusion_nb.unet import get_preset
from mri_diffusion_nb.training import TRAIN_PRESETS, train, train_config

CONFIGS = [('epsilon', 'linear'), ('v_prediction', 'linear'), ('epsilon', 'cosine'), ('v_prediction', 'cosine')]
T_REF = (100, 500, 900)  # noise levels: the linear schedule's ᾱ at these timesteps

def level_steps(kind:str, t_ref=T_REF, n_steps:int=1000)->list:
    "For each reference level, the timestep of schedule `kind` whose ᾱ is nearest (in log) the linear schedule's ᾱ at t_ref."
    lin, s = NoiseSchedule('linear', n_steps), NoiseSchedule(kind, n_steps)
    return [int((s.abar.log() - lin.abar[t].log()).abs().argmin()) for t in t_ref]

@torch.no_grad()
def x0_errors(unet:UNet2DModel, sched:NoiseSchedule, x0:torch.Tensor, y:torch.Tensor, noise:torch.Tensor, t:int, batch:int=64)->tuple:
    "Per-slice MSE of x̂0 (clipped, unclipped) at timestep t, averaged over the noise draws: noise is (K, N, 1, H, W)."
    K, N = noise.shape[:2]
    xs, ys, es = x0.repeat(K, 1, 1, 1), y.repeat(K), noise.reshape(K*N, *x0.shape[1:])
    clip, raw = [], []
    for i in range(0, len(xs), batch):
        xb, yb, eb = xs[i:i + batch], ys[i:i + batch], es[i:i + batch]
        tt = torch.full((len(xb),), t)
        xt = sched.q_sample(xb, tt, eb)
        x0h = sched.pred_x0(xt, unet(xt, tt, class_labels=yb).sample, tt)
        clip.append(((x0h.clamp(-1, 1) - xb)**2).mean(dim=(1, 2, 3)))
        raw.append(((x0h - xb)**2).mean(dim=(1, 2, 3)))
    per = lambda v: torch.cat(v).reshape(K, N).mean(0)
    return per(clip), per(raw)

def t_interval(v:np.ndarray, level:float=0.95)->tuple:
    "Mean and the half-width of its t-interval."
    return float(v.mean()), float(stats.t.ppf(0.5 + level/2, len(v) - 1)*v.std(ddof=1)/math.sqrt(len(v)))

def paired_ratio(a:np.ndarray, b:np.ndarray, n_boot:int=10_000, seed:int=0)->tuple:
    "mean(a)/mean(b) and its 95 % percentile interval from a paired bootstrap over slices."
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), (n_boot, len(a)))
    r = a[idx].mean(1)/b[idx].mean(1)
    return float(a.mean()/b.mean()), float(np.quantile(r, 0.025)), float(np.quantile(r, 0.975))

def preset_summary()->dict:
    "What each training preset trains: target, schedule, timesteps, loss weighting, peak learning rate, resolution."
    out = {}
    for k in TRAIN_PRESETS:
        c = train_config(k)
        out[k] = dict(prediction=c.prediction, schedule=c.schedule, n_timesteps=c.n_timesteps, loss_weighting=c.loss_weighting,
                      lr=c.lr, steps=c.steps, res=get_preset(c.preset).res)
    return out

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--steps', type=int, default=300, help='optimizer steps per run (the tiny preset: 300)')
    ap.add_argument('--noises', type=int, default=8, help='noise draws per held-out slice and level')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--out', default=str(Path(__file__).resolve().parents[1]/'nbs'/'objectives.json'))
    ap.add_argument('--presets-only', action='store_true', help="refresh only the protocol's `presets` block of --out")
    a = ap.parse_args()
    if a.presets_only:
        d = json.loads(Path(a.out).read_text())
        d['protocol']['presets'] = preset_summary()
        Path(a.out).write_text(json.dumps(d, indent=1, ensure_ascii=False) + '\n')
        return print(f"updated the presets of {a.out}")
    torch.set_num_threads(a.threads)
    t_all = time.time()
    data = mni152_slices(res=32)
    val = data.val
    g = torch.Generator().manual_seed(a.seed + 1)
    noise = torch.randn((a.noises, len(val), *val.images.shape[1:]), generator=g)
    mean_img = data.train.images.mean(0, keepdim=True)
    ref = ((mean_img - val.images)**2).mean(dim=(1, 2, 3)).numpy()   # predicting the mean training slice: no use of x_t at all
    rows, per_slice = [], {}
    with tempfile.TemporaryDirectory(prefix='objectives-') as tmp:
        for pred, kind in CONFIGS:
            name = f'{pred}/{kind}'
            cfg = train_config('tiny', out=f'{tmp}/{pred}-{kind}', steps=a.steps, seed=a.seed, prediction=pred, schedule=kind,
                               sample_every=0, ckpt_every=a.steps, log_every=max(1, a.steps//10))
            load0, t0, c0 = os.getloadavg()[0], time.time(), time.process_time()
            run = train(cfg, data=data, progress=False, device='cpu')
            train_s, cpu_s, load1 = time.time() - t0, time.process_time() - c0, os.getloadavg()[0]
            unet = UNet2DModel.from_pretrained(run/'ema').eval()
            sched = NoiseSchedule(kind, cfg.n_timesteps, prediction=pred)
            levels = []
            for t_ref, t in zip(T_REF, level_steps(kind)):
                clip, raw = (v.numpy() for v in x0_errors(unet, sched, val.images, val.labels, noise, t))
                per_slice[(name, t_ref)] = clip
                m, h = t_interval(clip)
                levels.append(dict(t_ref=t_ref, t=t, abar=float(sched.abar[t]), mse=m, ci95=h, mse_unclipped=float(raw.mean()),
                                   per_slice=[round(float(v), 6) for v in clip]))
            rows.append(dict(prediction=pred, schedule=kind, train_s=round(train_s, 1), train_cpu_s=round(cpu_s, 1),
                             load_avg=[round(load0, 2), round(load1, 2)], levels=levels))
            print(f"{name:<22} trained {a.steps} steps in {train_s:.0f}s; x̂0 MSE " +
                  '  '.join(f"t_ref={l['t_ref']}: {l['mse']:.4f} ± {l['ci95']:.4f}" for l in levels), flush=True)
    base = rows[0]
    for r in rows:
        for l, lb in zip(r['levels'], base['levels']):
            ratio, lo, hi = paired_ratio(np.array(l['per_slice']), np.array(lb['per_slice']))
            l['ratio_vs_eps_linear'] = dict(ratio=ratio, lo=lo, hi=hi)
    m_ref, h_ref = t_interval(ref)
    protocol = dict(
        data='mni152 built-in template, axial, 32 px (mni152_slices(res=32))', res=32, preset='tiny',
        n_train=len(data.train), n_heldout=len(val), steps=a.steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=a.seed,
        noises_per_slice=a.noises, noise_seed=a.seed + 1, threads=torch.get_num_threads(), weights='EMA', device='cpu',
        cpu=platform.processor() or platform.machine(), torch=torch.__version__,
        metric=('MSE(clip(x̂0, -1, 1), x0) on [-1, 1] images, per held-out slice averaged over its noise draws, with its own class '
                'label; mean over slices, 95 % t-interval over slices; ratios: paired bootstrap over slices (10,000 resamples)'),
        levels=('the linear schedule ᾱ_t at t_ref = 100, 500, 900; cosine runs evaluated at their own t with the nearest ᾱ'),
        caveat='one training seed per configuration: the intervals cover held-out slices and noise, not training randomness',
        reference_mean_slice=dict(mse=m_ref, ci95=h_ref, note='predicting the mean training slice, without looking at x_t'),
        presets=preset_summary(),
        wall_s=round(time.time() - t_all, 1))
    Path(a.out).write_text(json.dumps(dict(protocol=protocol, rows=rows), indent=1, ensure_ascii=False) + '\n')
    print(f"\nreference (mean training slice): {m_ref:.4f} ± {h_ref:.4f}")
    print('ratios of x̂0 MSE against epsilon/linear (paired bootstrap 95 % interval):')
    for r in rows[1:]:
        print(f"  {r['prediction'] + '/' + r['schedule']:<22}" + '  '.join(
            f"t_ref={l['t_ref']}: {l['ratio_vs_eps_linear']['ratio']:.2f} [{l['ratio_vs_eps_linear']['lo']:.2f}, "
            f"{l['ratio_vs_eps_linear']['hi']:.2f}]" for l in r['levels']))
    print(f"wall time {protocol['wall_s']:.0f}s; wrote {a.out}")

if __name__ == '__main__': main()
