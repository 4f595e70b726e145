"""Ship the population model (issue 25): copy a run's EMA weights into the package as `demo-population`, measure what
each class promises with the segmentation instrument (chapter 29) against held-out real subjects, and write the card.

    python tools/ship_population.py RUN_DIR --population ~/runs/pop/pop200 --held-out 40 [--n-per-class 64]
    python tools/ship_population.py --card-only   # the card again, from the shipped results and the benchmarks'

Protocol: the run was trained on a store of the population's first subjects (`--exclude` of the last `--held-out`,
which neither the model nor the instrument saw). For each guidance scale, `--n-per-class` slices per class
(dpm-sde, 20 steps, seed 0, bf16 autocast where native) are measured by the shipped instrument beside every slice of
the held-out subjects, classed by their truth masks (tumour when its area is at least the store's 100 mm^2).
Intervals: percentile bootstrap, over subjects for real slices and over slices for generated ones. Writes
mri_diffusion_nb/assets/demo-population/{ema/, scheduler/, config.json, evaluation/fidelity.json, MODEL_CARD.md}; the
old model is replaced only once the new one is complete."""
import argparse, json, os, shutil, sys, time
from pathlib import Path
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT/'mri_diffusion_nb'/'assets'/'demo-population'


def real_reference(seg, population:Path, held:int)->dict:
    "The held-out subjects' slices, classed by their truth masks, measured by the instrument."
    from mri_diffusion_nb.segmentation import anatomy_table, class_areas, population_slices
    subs = sorted(json.loads(p.read_text())['subject'] for p in (population/'.population').glob('*.json')
                  if p.name != 'settings.json')[-held:]
    d = population_slices(population, subs, res=seg.config['res'], progress=False)
    cls = (class_areas(d['y'])['tumour_mm2'] >= 100.).astype(int)
    return dict(subjects=subs, table=anatomy_table(seg, d['x'], cls, ['no tumour', 'tumour'], groups=d['subject']))


def fmt(d:dict, pct:bool=False)->str:
    "mean [lo, hi]"
    f = (lambda v: f'{v:.1%}') if pct else (lambda v: f'{v:,.0f}')
    return f"{f(d['mean'])} [{f(d['lo'])}, {f(d['hi'])}]"


def main():
    from mri_diffusion_nb.sampling import load_model, sample
    from mri_diffusion_nb.segmentation import anatomy_table, load_segmenter, segmenter_path
    from mri_diffusion_nb.training import TrainConfig, latest_checkpoint, read_metrics
    from mri_diffusion_nb.unet import n_params
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('run', type=Path, nargs='?')
    ap.add_argument('--population', type=Path)
    ap.add_argument('--card-only', action='store_true', help="rewrite MODEL_CARD.md from the shipped results")
    ap.add_argument('--check', action='store_true', help='with --card-only: exit 1 if the card differs from its sources')
    ap.add_argument('--held-out', type=int, default=40)
    ap.add_argument('--n-per-class', type=int, default=64)
    ap.add_argument('--guidance', default='0,3,7')
    a = ap.parse_args()
    if a.card_only: return card_only(a.check)
    if a.run is None or a.population is None: ap.error('RUN_DIR and --population are needed unless --card-only')
    ck = latest_checkpoint(a.run)
    if ck is None: sys.exit(f'{a.run}: no complete checkpoint')
    cfg, step = TrainConfig.from_json((ck/'config.json').read_text()), int(ck.name.split('-')[1])
    recs = [r for r in read_metrics(a.run) if r['step'] <= step]
    train_s = sum(r['time'] - p['time'] for p, r in zip(recs, recs[1:]) if r['time'] - p['time'] < 600)
    tmp = DEST.with_name('.tmp-demo-population')
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copytree(ck/'ema', tmp/'ema')
    shutil.copytree(ck/'scheduler', tmp/'scheduler')
    (tmp/'config.json').write_text(cfg.to_json())
    m, seg = load_model(tmp), load_segmenter(segmenter_path())
    real = real_reference(seg, a.population.expanduser(), a.held_out)
    gen, times = {}, {}
    classes = torch.arange(m.n_classes).repeat_interleave(a.n_per_class)
    for w in [float(x) for x in a.guidance.split(',')]:
        t0 = time.time()
        imgs = sample(m, classes=classes, guidance=w, sampler='dpm-sde', steps=20, seed=0, autocast=True)
        times[w] = round(time.time() - t0, 1)
        gen[w] = anatomy_table(seg, imgs, classes.numpy(), list(m.class_names))
        print(f'w={w:g}: ' + '; '.join(f"{r['cls']}: tumour {r['tumour_present']['mean']:.2f}" for r in gen[w]),
              f'({times[w]:.0f} s)', file=sys.stderr)
    res = dict(protocol=__doc__.split('\n\n', 2)[2].replace('\n', ' '), run=str(a.run), step=step,
               planned_steps=cfg.steps, train_hours=round(train_s/3600, 2), params=n_params(m.unet), res=m.res,
               class_names=list(m.class_names), n_per_class=a.n_per_class, real=real,
               generated={str(w): t for w, t in gen.items()}, sample_seconds={str(w): s for w, s in times.items()},
               instrument=seg.info.get('dice'), date=time.strftime('%Y-%m-%d'), cpus=os.cpu_count())
    (tmp/'evaluation').mkdir()
    (tmp/'evaluation'/'fidelity.json').write_text(json.dumps(res, indent=1) + '\n')
    (tmp/'MODEL_CARD.md').write_text(card(res, cfg) + memorization_section(tmp))
    old = DEST.with_name('.old-demo-population')
    if DEST.exists(): os.replace(DEST, old)
    os.replace(tmp, DEST)
    shutil.rmtree(old, ignore_errors=True)
    print((DEST/'MODEL_CARD.md').read_text())


MEMO = ROOT/'benchmarks'/'results'/'memorization_population.json'


def card_only(check:bool=False):
    "Rewrite the shipped card from its fidelity.json and the memorization benchmark's results (or check it)."
    from mri_diffusion_nb.training import TrainConfig
    r = json.loads((DEST/'evaluation'/'fidelity.json').read_text())
    cfg = TrainConfig.from_json((DEST/'config.json').read_text())
    text = card(r, cfg) + memorization_section(DEST, copy=not check)
    if check:
        same = (DEST/'MODEL_CARD.md').read_text() == text and (not MEMO.exists() or MEMO.with_suffix('.png').read_bytes()
                                                              == (DEST/'evaluation'/'memorization_gallery.png').read_bytes())
        if not same: sys.exit(f"{DEST/'MODEL_CARD.md'}: differs from its results; run tools/ship_population.py --card-only")
        return
    (DEST/'MODEL_CARD.md').write_text(text)
    print(text)


def _ci(v:float, ci, pct:bool=True)->str:
    f = (lambda x: f'{x:.1%}') if pct else (lambda x: f'{x:.2f}')
    return f'{f(v)} [{f(ci[0])}, {f(ci[1])}]'


def memorization_section(dest:Path, copy:bool=True)->str:
    "The card's memorization and membership-inference section, from the benchmark's results (gallery copied)."
    if not MEMO.exists(): return ''
    m = json.loads(MEMO.read_text())
    if copy:
        (dest/'evaluation').mkdir(exist_ok=True)
        shutil.copy(MEMO.with_suffix('.png'), dest/'evaluation'/'memorization_gallery.png')
    rows = [f"| {float(w):g} | {sp} | {_ci(a['above'], a['above_ci95'])} | "
            f"{_ci(a['closer_to_trained'], a['closer_to_trained_ci95'])} | "
            f"{_ci(a['calib_closer_to_trained'], a['calib_closer_to_trained_ci95'])} |"
            for w, g in m['by_guidance'].items() for sp, a in g.items()]
    mia = m['membership']
    att = '; '.join(f"{k}: {_ci(v['auc'], (v['lo'], v['hi']), False)}" for k, v in mia['attacks'].items())
    return f"""
**Memorization by subject** (`benchmarks/memorization_population.py`, chapter 23): {m['n']} samples per guidance
scale against slices of {m['sets']['train_ref']} trained and {m['sets']['held_ref']} never-trained subjects; the copy
threshold is the 99th percentile of the nearest-trained similarity of {m['slices']['calib']:,} slices of
{m['sets']['calib']} other never-trained subjects. In pixels (Pearson, 64 px, shifts up to 1 px) and in the
segmenter's features (cosine). Mean [95 % interval]: Wilson for samples, bootstrap over subjects for real slices.

| w | space | above the copy threshold (real: 1 %) | closer to a trained than a held-out subject | the same for real never-trained slices |
|---|---|---|---|---|
""" + '\n'.join(rows) + f"""

**Membership inference** (a loss attack: {mia['n_members']} slices of trained subjects against {mia['n_non_members']}
of never-trained ones, the denoising loss at t = {', '.join(map(str, mia['timesteps']))} with {mia['draws']} shared
noise draws; ROC AUC, 0.5 = cannot tell, 95 % bootstrap over subjects): {att}.

![The samples at w = 7 closest to a trained subject's slice, that slice, and their nearest never-trained slice](evaluation/memorization_gallery.png)
"""


def card(r:dict, cfg)->str:
    "The model card, every number from `r` (the results just measured)."
    real = {t['cls']: t for t in r['real']['table']}
    rows = [f"| real, {len(r['real']['subjects'])} held-out subjects | {c} | {t['n']:,} | {fmt(t['tumour_present'], True)} | "
            f"{fmt(t['tumour_mm2'])} | {fmt(t['ventricle_mm2'])} |" for c, t in real.items()]
    for w, tab in r['generated'].items():
        rows += [f"| generated, w = {float(w):g} | {t['cls']} | {t['n']} | {fmt(t['tumour_present'], True)} | "
                 f"{fmt(t['tumour_mm2'])} | {fmt(t['ventricle_mm2'])} |" for t in tab]
    dice = ', '.join(f'{k} {v:.2f}' for k, v in (r['instrument'] or {}).items())
    return f"""# Population model card (`demo-population`)

**What it is.** A class-conditional DDPM U-Net (diffusers `UNet2DModel`, preset `demo`: {r['res']} px,
{r['params']/1e6:.2f} M parameters), EMA weights, trained with classifier-free guidance (p_uncond = {cfg.p_uncond}) on
axial T1 slices of the simulated population (chapter 02) to generate a slice **with a tumour** or **without one**.

**Data.** A BraTS-like population from `mri-diffusion population --n 200 --layout brats --seed 0` (every subject has a
tumour; slices are "tumour" where the seg map covers at least 100 mm²), its first 160 subjects through
`mri-diffusion data --modality t1 --res 64`; the last {len(r['real']['subjects'])} subjects are held out from the model and from
the instrument that measures it. Classes: {', '.join(r['class_names'])}. Age groups are not classes of this model: the
data command gives a slice one label rule (tumour from the seg maps, or a CSV column per subject), so tumour and age at
once would need a product of the two; the per-subject age is in the population's truth table for a later model.

**Training.** `mri-diffusion train --preset demo` ({r['step']:,} of {r['planned_steps']:,} planned steps of batch
{cfg.batch_size}, AdamW lr {cfg.lr:g}, {cfg.lr_schedule} decay, {cfg.mixed_precision} autocast, ε-prediction,
{cfg.schedule} β schedule, T = {cfg.n_timesteps}, loss weighting {cfg.loss_weighting}) on {r['cpus']} CPU cores, about
{r['train_hours']:.1f} h of logged training time.

**Conditional fidelity** (`tools/ship_population.py`, measured {r['date']}): the segmentation instrument of chapter 29
(held-out Dice: {dice}) measures every slice; {r['n_per_class']} generated slices per class and guidance scale
(dpm-sde, 20 steps, seed 0). Mean [95 % interval]; real intervals resample subjects, generated ones slices.

| slices | class | n | tumour present (>= 100 mm²) | tumour area (mm²) | ventricle area (mm²) |
|---|---|---|---|---|---|
""" + '\n'.join(rows) + f"""

The real rows include the instrument's own errors, so a generated class matches its promise when its row matches the
real row of the same class. Sampling time on this machine, {2*r['n_per_class']} slices at w = 7:
{r['sample_seconds'].get('7.0', float('nan')):.0f} s.
"""


if __name__ == '__main__':
    main()
