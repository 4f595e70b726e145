"""Memorization by subject, against guidance, and a membership-inference attack, for the shipped population model.

    OMP_NUM_THREADS=2 python benchmarks/memorization_population.py --store ~/runs/pop/store200 \
        --trained-store ~/runs/pop/store160

Protocol (issues 25 and 26, chapter 23): the model is `demo-population`, trained on the train split of
`--trained-store` (subjects 0-159 of the population of `tools/ship_population.py`; its validation subjects were never
trained on). Every real slice comes from `--store` (all 200 subjects, the same preprocessing). `subject_sets` splits
the never-trained subjects in two halves (`calib`: the real yardstick; `held_ref`: a reference) and draws as many
trained subjects as `held_ref` has (`train_ref`), seed 0. For each guidance w, `--n` slices are generated (dpm-sde,
20 steps, seed 0, classes in turn) and `subject_audit` finds every sample's nearest trained-subject and held-out-subject
slice, in pixels (Pearson at 64 px, shifts up to 1 px) and in the segmenter's features (its U-Net's mid-block output,
cosine); the copy threshold is the 0.99-quantile of the calib slices' nearest-trained similarity. Intervals: Wilson for
shares of samples, a bootstrap over subjects for the calib share. Membership inference: `--mia` slices from trained
subjects and as many from never-trained subjects (the calib and held_ref halves), the model's denoising loss at
t = 50, 200, 500 (4 shared noise draws each, the slice's own class), score = minus the loss (and minus the mean of
the per-t z-scored losses); ROC AUC with a 95 % bootstrap interval over subjects. Writes
`benchmarks/results/memorization_population.json` and the gallery `memorization_population.png`."""
import argparse, json, os, platform, tempfile, time
from pathlib import Path
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
TIMESTEPS = (50, 200, 500)


def seg_features(net):
    "The segmenter's mid-block activations as an embedding: images -> (N, D)."
    box = {}
    net.unet.mid_block.register_forward_hook(lambda m, i, o: box.__setitem__('x', o))
    def f(x):
        with torch.no_grad(): net(x)
        return box['x'].flatten(1)
    return f


def summary(a:dict)->dict:
    return {k: v for k, v in a.items() if not torch.is_tensor(v)}


def gallery(fake, tr, hr, path:Path, k:int=8):
    "The k samples closest to a trained subject's slice, that slice, and the sample's nearest held-out slice."
    from mri_diffusion_nb.data import show_grid
    from mri_diffusion_nb.memorization import nearest_neighbours
    ti, tc, _ = nearest_neighbours(fake, tr, max_shift=1)
    order = tc.argsort(descending=True)[:k]
    hi, hc, _ = nearest_neighbours(fake[order], hr, max_shift=1)
    imgs = torch.cat([fake[order], tr[ti[order]], hr[hi]])
    titles = ([f'sample r={float(tc[i]):.3f}' for i in order] + ['nearest trained']*k
              + [f'held-out r={float(c):.3f}' for c in hc])
    fig = show_grid(imgs, titles, ncols=k, size=1.3, dpi=100,
                    suptitle='w = 7: the samples closest to a trained subject (top), that slice (middle), '
                             'their nearest never-trained slice (bottom)')
    fig.savefig(path, dpi=100)
    return dict(pairs=[dict(sample=int(i), trained_r=float(tc[i]), held_r=float(c)) for i, c in zip(order, hc)])


def membership(model, real, sets:dict, trained:set, n:int, seed:int)->dict:
    from mri_diffusion_nb.memorization import membership_auc, membership_losses
    rng = np.random.default_rng(seed)
    subj = np.asarray(real.subjects)
    mem = np.flatnonzero(np.isin(subj, sorted(trained)))
    non = np.concatenate([sets['calib'], sets['held_ref']])
    idx = np.sort(np.concatenate([rng.choice(mem, n, replace=False), rng.choice(non, n, replace=False)]))
    x, y, member = real.images[idx], real.labels[idx], np.isin(subj[idx], sorted(trained))
    loss = membership_losses(model, x, y, TIMESTEPS, draws=4, seed=seed).numpy()
    z = ((loss - loss.mean(0))/loss.std(0)).mean(1)
    out = {f't={t}': membership_auc(-loss[:, j], member, subj[idx]) for j, t in enumerate(TIMESTEPS)}
    out['mean z-score'] = membership_auc(-z, member, subj[idx])
    return dict(timesteps=list(TIMESTEPS), draws=4, n_members=int(member.sum()), n_non_members=int((~member).sum()),
                attacks=out)


def main():
    from mri_diffusion_nb.generate import generate
    from mri_diffusion_nb.memorization import subject_audit, subject_reference, subject_sets
    from mri_diffusion_nb.report import read_png
    from mri_diffusion_nb.sampling import load_model
    from mri_diffusion_nb.segmentation import load_segmenter, segmenter_path
    from mri_diffusion_nb.store import StoreData
    import mri_diffusion_nb.data  # noqa: F401  (show_grid, in `gallery`)
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--store', type=Path, required=True)
    ap.add_argument('--trained-store', type=Path, required=True)
    ap.add_argument('--n', type=int, default=200, help='generated slices per guidance scale')
    ap.add_argument('--guidance', default='0,1,3,7')
    ap.add_argument('--mia', type=int, default=400, help='slices per group in the membership attack')
    ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args()
    t0 = time.time()
    model, net = load_model('demo-population'), load_segmenter(segmenter_path())
    real, trained = StoreData(a.store.expanduser()), set(StoreData(a.trained_store.expanduser()).train.subjects)
    sets = subject_sets(real.subjects, trained, seed=a.seed)
    tr, hr, ca = (real.images[sets[k]] for k in ('train_ref', 'held_ref', 'calib'))
    ca_subj = np.asarray(real.subjects)[sets['calib']]
    refs = dict(pixels=subject_reference(tr, hr, ca, ca_subj, q=0.99),
                features=subject_reference(tr, hr, ca, ca_subj, q=0.99, features=seg_features(net)))
    res = dict(by_guidance={})
    with tempfile.TemporaryDirectory() as d:
        for w in [float(v) for v in a.guidance.split(',')]:
            generate(model, Path(d)/f'w{w}', n=a.n, guidance=w, sampler='dpm-sde', steps=20, seed=0, progress=True,
                     autocast=True)
            fake = torch.stack([read_png(p) for p in sorted((Path(d)/f'w{w}'/'png').glob('*.png'))])
            px, ft = subject_audit(fake, refs['pixels']), subject_audit(fake, refs['features'])
            res['by_guidance'][str(w)] = dict(pixels=summary(px), features=summary(ft))
            print(f"w={w}: above {px['above']:.3f} {np.round(px['above_ci95'], 3)}, closer to trained "
                  f"{px['closer_to_trained']:.3f} (real {px['calib_closer_to_trained']:.3f}); features above "
                  f"{ft['above']:.3f}, closer {ft['closer_to_trained']:.3f} (real {ft['calib_closer_to_trained']:.3f})")
            if w == 7.0: res['gallery'] = gallery(fake, tr, hr, HERE/'results'/'memorization_population.png')
    res['membership'] = membership(model, real, sets, trained, a.mia, a.seed)
    print({k: round(v['auc'], 3) for k, v in res['membership']['attacks'].items()})
    out = dict(protocol=__doc__.split('\n\n', 2)[2], command=f'python benchmarks/memorization_population.py --store '
               f'{a.store} --trained-store {a.trained_store}', n=a.n, seed=a.seed, model='demo-population',
               model_steps=model.config.get('steps'), sets={k: len(v) for k, v in sets['subjects'].items()},
               slices={k: int(len(sets[k])) for k in ('train_ref', 'held_ref', 'calib')},
               torch=torch.__version__, machine=platform.machine(), cpus=os.cpu_count(),
               threads=torch.get_num_threads(), seconds=time.time() - t0, **res)
    (HERE/'results'/'memorization_population.json').write_text(json.dumps(out, indent=1, default=float) + '\n')
    print(f"wrote {HERE/'results'/'memorization_population.json'} in {out['seconds']:.0f} s")


if __name__ == '__main__':
    main()
