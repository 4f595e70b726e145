"""Ship a demo model: copy a run's EMA weights into the package, evaluate them with chapter 25 (`evaluate`), and write the model card.

    python tools/ship_demo.py RUN_DIR [--n-per-class 32] [--sampler dpm-sde] [--steps 20]

Writes mri_diffusion_nb/assets/demo/{ema/, scheduler/, config.json, MODEL_CARD.md, evaluation/} (each file atomically; the
old demo is replaced only once the new one is complete). Every figure in the card is measured here, by this script.
"""
import argparse, json, platform, shutil, sys, time, os
from pathlib import Path
import torch
from mri_diffusion_nb.data import mni152_slices
from mri_diffusion_nb.training import TrainConfig, latest_checkpoint, read_metrics
from mri_diffusion_nb.sampling import load_model, sample
from mri_diffusion_nb.adherence import save_classifier, train_classifier
from mri_diffusion_nb.report import evaluate, write_report
from mri_diffusion_nb.unet import n_params
from card_guidance import guidance_section  # tools/card_guidance.py

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT/'mri_diffusion_nb'/'assets'/'demo'

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('run'); ap.add_argument('--n-per-class', type=int, default=32); ap.add_argument('--sampler', default='dpm-sde'); ap.add_argument('--steps', type=int, default=20)
    ap.add_argument('--guidance', default='0,1,2,3,5,7'); ap.add_argument('--hardware', default=None, help='where it was trained, for the card')
    a = ap.parse_args()
    run = Path(a.run); ck = latest_checkpoint(run)
    if ck is None: sys.exit(f"{run}: no complete checkpoint")
    cfg = TrainConfig.from_json((ck/'config.json').read_text())
    recs = read_metrics(run)
    step = int(ck.name.split('-')[1])
    recs = [r for r in recs if r['step'] <= step]
    train_s = sum((r['time'] - p['time']) for p, r in zip(recs, recs[1:]) if r['time'] - p['time'] < 600)
    tmp = DEST.with_name('.tmp-demo'); shutil.rmtree(tmp, ignore_errors=True); tmp.mkdir(parents=True)
    shutil.copytree(ck/'ema', tmp/'ema'); shutil.copytree(ck/'scheduler', tmp/'scheduler')
    (tmp/'config.json').write_text(cfg.to_json())
    m = load_model(tmp)
    real = mni152_slices(res=m.res)
    t0 = time.time(); clf = train_classifier(real, progress=False); clf_s = time.time() - t0
    save_classifier(clf, tmp/'classifier.safetensors')
    ws = [float(w) for w in a.guidance.split(',')]
    classes = torch.arange(m.n_classes).repeat_interleave(a.n_per_class)
    reports, times = [], {}
    for w in ws:
        t0 = time.time()
        imgs = sample(m, classes=classes, guidance=w, sampler=a.sampler, steps=a.steps, seed=0, autocast=True)
        times[w] = time.time() - t0
        reports.append(evaluate(real, imgs, classes, feature='standin', classifier=clf, group=dict(guidance=w), progress=False))
        ca = reports[-1]['class_adherence']
        print(f"w={w:g}: adherence {ca['accuracy']:.3f} " + ' '.join(f"{k}={v['accuracy']:.2f}" for k, v in ca['per_class'].items())
              + f"; closer_share {reports[-1]['memorization']['closer_share']:.2f}; {times[w]:.0f}s", file=sys.stderr)
    write_report(reports, tmp/'evaluation', sweep_key='guidance')
    r7 = next(r for r in reports if r['group']['guidance'] == 7.0)
    ca7 = r7['class_adherence']; mem7 = r7['memorization']; div7 = r7['diversity']['per_class']
    worst7 = min(v['accuracy'] for v in ca7['per_class'].values())
    if step >= cfg.steps: status = 'The full planned run.'
    elif worst7 >= 0.9: status = (f'The checkpoint at step {step:,} of the {cfg.steps:,} planned (the learning rate follows a cosine planned over the full run), shipped because it meets '
                                  f'the quality goal: at least 90 % class adherence for every class at w = 7. `mri-diffusion train --resume` continues the run.')
    else: status = (f'An intermediate checkpoint: {step:,} of the {cfg.steps:,} planned steps, below the goal of 90 % class adherence for every class at w = 7; '
                    'training continues (`mri-diffusion train --resume`) and the model will be replaced with its card.')
    size_mb = sum(f.stat().st_size for f in (tmp/'ema').glob('*.safetensors'))/2**20
    rows = '\n'.join(f"| {r['group']['guidance']:g} | {r['class_adherence']['accuracy']:.1%} | " +
                     ' / '.join(f"{v['accuracy']:.0%}" for v in r['class_adherence']['per_class'].values()) +
                     f" | {sum(v['fake'] for v in r['diversity']['per_class'].values())/m.n_classes:.3f} | {r['memorization']['closer_share']:.0%} |" for r in reports)
    card = f"""# Demo model card

**What it is.** A class-conditional DDPM U-Net (diffusers `UNet2DModel`, preset `demo`: {m.res} px, {n_params(m.unet)/1e6:.2f} M parameters), EMA weights,
trained with classifier-free guidance (label dropout p_uncond = {cfg.p_uncond}) to generate axial T1 slices of the MNI152 2009 template at a requested anatomical level.
It exists so that sampling, the widgets and the metrics chapter show real brains on a CPU without training first. It is **not** a model of human variability: it was trained on one brain.

**Data.** The MNI152 ICBM 2009 T1 template shipped in nilearn, {len(real.train)} training slices ({m.res} px), {len(real.val)} held-out slices (every 5th), classes:
{', '.join(m.class_names)} (equal bins over the brain's axial extent). Augmentation: {'small affine and intensity jitter' if cfg.augment else 'none'}.

**Training.** `mri-diffusion train --preset demo` ({step:,} steps of batch {cfg.batch_size}, AdamW lr {cfg.lr:g} with {cfg.warmup} warm-up steps and {cfg.lr_schedule} decay planned over {cfg.steps:,} steps,
{cfg.mixed_precision} autocast, ε-prediction on a {cfg.schedule} β schedule with T = {cfg.n_timesteps}, loss weighting {cfg.loss_weighting}, EMA decay ≤ {cfg.ema_decay}).
Hardware: {a.hardware or platform.processor() or platform.machine()} ({os.cpu_count()} cores); about {train_s/3600:.1f} h of logged training time. Weights: {size_mb:.1f} MB safetensors.

**Status.** {status}

**Evaluation** (chapter 25 `evaluate`, `tools/ship_demo.py`, measured when this card was written): {a.n_per_class} samples per class per guidance scale, plain classifier-free guidance (`cfg`), {a.sampler}-{a.steps}{' (stochastic DPM-Solver++, the default sampler)' if a.sampler == 'dpm-sde' else ''} under bf16 autocast, seed 0.
Class adherence = accuracy of a small CNN classifier trained on the real training slices (held-out real accuracy {clf.info.get('val_accuracy', float('nan')):.1%}, trained in {clf_s:.0f} s)
on generated slices against the class asked for. Diversity = mean pairwise MS-SSIM within a class (real training slices: {sum(v['real'] for v in div7.values())/m.n_classes:.3f}).
Memorization = share of samples whose nearest training slice is closer (Pearson r, shifts ≤ 1 px) than 95 % of real held-out slices' nearest training slices (real data: ≈ 5 %).

| guidance w | class adherence | per class | diversity (MS-SSIM, mean over classes) | memorization share |
|---|---|---|---|---|
{rows}

At the reference guidance w = 7: adherence {ca7['accuracy']:.1%}, lowest class {min(v['accuracy'] for v in ca7['per_class'].values()):.1%} ({min(ca7['per_class'], key=lambda k: ca7['per_class'][k]['accuracy'])}).
Memorization: {mem7['closer_share']:.0%} of samples are closer to a training slice than the held-out threshold (r > {mem7['threshold']:.4f}: held-out slices are neighbours of training slices in the same brain,
median r = {mem7['median_held_out_train_corr']:.4f}); the samples' median nearest-training r is {mem7['median_train_corr']:.3f}.{' So far the samples are not copies of training slices; with one template as the whole training set, expect copies as training goes on, and the audit is what will show them.' if mem7['closer_share'] < 0.5 else ' One template is one brain: close copies of training slices are expected, and the audit finds them.'}
FID/KID in `evaluation/` use the stand-in feature network (no Inception weights here) and are not comparable to published FID.

Sampling time on this machine at w = 7, {a.n_per_class*m.n_classes} images: {times.get(7.0, float('nan')):.0f} s.
"""
    study = Path(__file__).resolve().parents[1]/'nbs'/'guidance_study.json'  # chapter 17's study: which guidance method to use
    if study.exists(): card = card.rstrip('\n') + '\n\n' + guidance_section(json.loads(study.read_text()))
    (tmp/'MODEL_CARD.md').write_text(card)
    old = DEST.with_name('.old-demo')
    if DEST.exists(): os.replace(DEST, old)
    os.replace(tmp, DEST); shutil.rmtree(old, ignore_errors=True)
    print(card)

if __name__ == '__main__': main()
