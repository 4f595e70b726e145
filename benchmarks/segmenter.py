"""The segmentation instrument (issue 25, chapter 29): trained on a population's subjects, scored on held-out ones.

    OMP_NUM_THREADS=2 python benchmarks/segmenter.py --population ~/runs/pop/pop200 --held-out 40 --steps 2500

Protocol: a BraTS-like population made by `mri-diffusion population` (every subject has a tumour), every axial slice
the store keeps at 64 px (the `mri-diffusion data` grid and normalisation) with its class map from the subject's label
map; the last `--held-out` subjects are never seen in training. Reported on them: 3D Dice per subject for ventricles
and tumour (mean, 95 % percentile-bootstrap interval over subjects); per slice, tumour present (area >= the store's
100 mm^2 threshold) by the network against the truth mask on the same grid (sensitivity and specificity, Wilson 95 %
intervals), and the error of measured areas. Writes the weights (`--out`) and `benchmarks/results/segmenter.json`."""
import argparse, json, os, platform, time
from pathlib import Path
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def area_errors(pred, truth, c:str)->dict:
    "Measured minus true area (mm^2) of class c per slice: mean, mean absolute, correlation."
    from mri_diffusion_nb.segmentation import class_areas
    a, b = class_areas(pred)[f'{c}_mm2'], class_areas(truth)[f'{c}_mm2']
    return dict(mean_diff_mm2=float((a - b).mean()), mean_abs_diff_mm2=float(np.abs(a - b).mean()),
                mean_true_mm2=float(b.mean()), r=float(np.corrcoef(a, b)[0, 1]))


def presence(pred, truth, thr)->dict:
    "Slice-level tumour presence (area >= thr) by the network against the truth: sensitivity, specificity."
    from mri_diffusion_nb.reader_study import wilson
    from mri_diffusion_nb.segmentation import class_areas
    p, t = class_areas(pred)['tumour_mm2'] >= thr, class_areas(truth)['tumour_mm2'] >= thr
    tp, tn = int((p & t).sum()), int((~p & ~t).sum())
    return dict(threshold_mm2=thr, positives=int(t.sum()), negatives=int((~t).sum()),
                sensitivity=tp/max(int(t.sum()), 1), sensitivity_ci=list(wilson(tp, int(t.sum()))),
                specificity=tn/max(int((~t).sum()), 1), specificity_ci=list(wilson(tn, int((~t).sum()))))


def main():
    # every module now: a long run must not import a library file that was edited while it trained
    from mri_diffusion_nb.segmentation import (CLASSES, boot_interval, dice_by_subject, population_slices, save_segmenter,
                                               segment, train_segmenter)
    import mri_diffusion_nb.reader_study  # noqa: F401  (wilson, in `presence`)
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--population', type=Path, required=True)
    ap.add_argument('--held-out', type=int, default=40)
    ap.add_argument('--steps', type=int, default=2500)
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--lr', type=float, default=2e-3)
    ap.add_argument('--res', type=int, default=64)
    ap.add_argument('--out', type=Path, default=ROOT/'mri_diffusion_nb'/'assets'/'segmenter.safetensors')
    a = ap.parse_args()
    t0 = time.time()
    data = population_slices(a.population.expanduser(), res=a.res, progress=True)
    subjects = sorted(set(data['subject']))
    held = set(subjects[-a.held_out:])
    m = torch.tensor([s in held for s in data['subject']])
    tr = dict(x=data['x'][~m], y=data['y'][~m], subject=[s for s in data['subject'] if s not in held])
    t_data = time.time() - t0
    t0 = time.time()
    net, losses = train_segmenter(tr, steps=a.steps, batch=a.batch, lr=a.lr, progress=True)
    t_train = time.time() - t0
    net.info.update(held_out=sorted(held))
    save_segmenter(net, a.out)  # saved before it is scored: the weights are never lost to a failure below
    ids = [s for s in data['subject'] if s in held]
    pred, truth = segment(net, data['x'][m]), data['y'][m]
    dice = {c: boot_interval(list(dice_by_subject(pred, truth, ids, k).values())) for k, c in enumerate(CLASSES) if k}
    res = dict(protocol=__doc__.split('\n\n', 2)[2].replace('\n', ' '), population=str(a.population),
               subjects=dict(train=len(subjects) - len(held), held_out=len(held)),
               slices=dict(train=int((~m).sum()), held_out=int(m.sum())), res=a.res, steps=a.steps, batch=a.batch,
               lr=a.lr, params=sum(p.numel() for p in net.parameters()), dice=dice,
               tumour_presence=presence(pred, truth, 100.),
               area={c: area_errors(pred, truth, c) for k, c in enumerate(CLASSES) if k},
               seconds=dict(slices=round(t_data), train=round(t_train), per_step=round(t_train/a.steps, 3)),
               final_loss=net.info['final_loss'], weights=str(a.out.relative_to(ROOT)) if a.out.is_relative_to(ROOT)
               else str(a.out), machine=dict(cpus=os.cpu_count(), threads=torch.get_num_threads(),
                                             python=platform.python_version(), torch=torch.__version__),
               date=time.strftime('%Y-%m-%d'))
    net.info.update(dice={c: d['mean'] for c, d in dice.items()})
    save_segmenter(net, a.out)
    (HERE/'results'/'segmenter.json').write_text(json.dumps(res, indent=1) + '\n')
    print(json.dumps(dict(dice=dice, presence=res['tumour_presence'], seconds=res['seconds']), indent=1))


if __name__ == '__main__':
    main()
