"""Can a machine tell the reader study's real images from its generated ones without looking at anatomy? (issue 26)

    OMP_NUM_THREADS=2 python benchmarks/reader_tells.py --store ~/runs/pop/store200

Protocol: for each pair of sources, `--n` images are generated (`generate`, dpm-sde, 20 steps, w = 7, seed 0), and
`--draws` studies of `--study` images (half real, half generated, classes balanced, order seeds 0, 1, ...) are made by
`reader_study.make_study` exactly as `mri-diffusion reader-study make` makes them (tells='warn', so that it writes them).
The tell detector (`tell_check`: a logistic regression on fifteen image statistics, stratified 5-fold out-of-fold
scores, ROC AUC with DeLong's 95 % interval) is run on each study's images twice: as the study exports them
(`same_look`: 8-bit levels, black outside the head) and as the export did before (8-bit levels only).
Pairs: the built-in MNI152 slices against the shipped `demo` model; and, where `--store` holds the simulated
population of `tools/ship_population.py` (subjects 0-199), its held-out subjects (160-199, never seen by the model)
against the shipped `demo-population` model. Writes `benchmarks/results/reader_tells.json`."""
import argparse, json, os, platform, tempfile, time
from pathlib import Path
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _raw(x)->np.ndarray:
    from mri_diffusion_nb.data import to_uint
    return to_uint(x.reshape(x.shape[-2:]), numpy=True)


def study_tells(real, fake:Path, n:int, seed:int, tmp:Path)->dict:
    "One study made by `make_study`; the tell detector on its images as exported now and as exported before."
    from mri_diffusion_nb.reader_study import make_study, read_slices, same_look, tell_check
    from mri_diffusion_nb.report import read_png
    key = make_study(real, fake, tmp/f'study{seed}', n=n, seed=seed, tells='warn')
    res, items = key['image_size'], key['items']
    ri = [i['source'] for i in items if i['truth'] == 'real']
    xr = iter(read_slices(real.images, ri, res))
    raw = [next(xr) if i['truth'] == 'real' else read_png(fake/i['source']) for i in items]
    syn = [i['truth'] == 'synthetic' for i in items]
    before = tell_check([_raw(x) for x in raw], syn, seed=seed)
    now = tell_check([_raw(same_look(x)) for x in raw], syn, seed=seed)
    assert abs(now['auc'] - key['tell_check']['auc']) < 1e-9, 'the study and the benchmark disagree'
    pick = ('auc', 'auc_ci95', 'tells', 'strongest', 'strongest_auc', 'features')
    return dict(seed=seed, n=n, same_look={k: now[k] for k in pick}, before={k: before[k] for k in pick})


def pair(name:str, real, model:str, a, tmp:Path)->dict:
    "Generate from `model`, then `a.draws` studies against `real`."
    from mri_diffusion_nb.generate import generate
    from mri_diffusion_nb.sampling import load_model
    m = load_model(model)
    fake = tmp/f'fake-{model}'
    t0 = time.time()
    generate(m, fake, n=a.n, guidance=7.0, sampler='dpm-sde', steps=20, seed=0, progress=True, autocast=True)
    t_gen = time.time() - t0
    draws = [study_tells(real, fake, a.study, s, tmp/name) for s in range(a.draws)]
    for d in draws:
        print(f"{name} study {d['seed']}: AUC now {d['same_look']['auc']:.2f} {np.round(d['same_look']['auc_ci95'], 2)}"
              f" ({d['same_look']['strongest']}), before {d['before']['auc']:.2f}")
    return dict(real=getattr(real, 'settings', {}).get('source', 'mni152'), model=model, generated=a.n,
                generation='dpm-sde, 20 steps, w = 7, seed 0, bf16 autocast where native', seconds_generating=t_gen,
                draws=draws)


def held_out(store:Path, first:int):
    "The store's slices of subjects numbered `first` and above (never seen by the population model)."
    from mri_diffusion_nb.store import StoreData
    ds = StoreData(store)
    keep = np.array([int(s.rsplit('-', 1)[-1]) >= first for s in ds.subjects])
    return StoreData(ds.folder, ds._index, ds._pos[keep])


def main():
    import mri_diffusion_nb.generate, mri_diffusion_nb.reader_study, mri_diffusion_nb.report  # noqa: F401,E401
    from mri_diffusion_nb.reader_study import open_real
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--store', type=Path, help='slice store of the simulated population (subjects 0-199)')
    ap.add_argument('--first-held-out', type=int, default=160)
    ap.add_argument('--n', type=int, default=120, help='images generated per model')
    ap.add_argument('--study', type=int, default=60, help='images per study')
    ap.add_argument('--draws', type=int, default=3, help='studies per pair (order seeds 0..draws-1)')
    a = ap.parse_args()
    t0, out = time.time(), {}
    with tempfile.TemporaryDirectory() as d:
        out['mni152_demo'] = pair('mni152_demo', open_real('mni152', 64), 'demo', a, Path(d))
        if a.store:
            real = held_out(a.store.expanduser(), a.first_held_out)
            out['population_heldout_demo_population'] = pair('population', real, 'demo-population', a, Path(d))
            out['population_heldout_demo_population']['real_subjects'] = sorted(set(real.subjects))
    res = dict(protocol=__doc__.split('\n\n', 2)[2], command='python benchmarks/reader_tells.py '
               + (f'--store {a.store}' if a.store else ''), n=a.n, study=a.study, draws=a.draws,
               torch=torch.__version__, machine=platform.machine(), cpus=os.cpu_count(),
               threads=torch.get_num_threads(), seconds=time.time() - t0, pairs=out)
    (HERE/'results').mkdir(exist_ok=True)
    (HERE/'results'/'reader_tells.json').write_text(json.dumps(res, indent=1, default=float) + '\n')
    print(f"wrote {HERE/'results'/'reader_tells.json'} in {res['seconds']:.0f} s")


if __name__ == '__main__':
    main()
