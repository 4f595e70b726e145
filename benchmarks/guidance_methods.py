"""Guidance methods side by side in one run (chapter 17): every method x sampler x guidance scale on the demo model (or a run directory), the same seeds everywhere.

    OMP_NUM_THREADS=2 python benchmarks/guidance_methods.py [--per-class 32] [--guidance 7,3,1] [--samplers dpm-sde-20,dpm-20,ddim-50,ddpm-1000]
                                                        [--methods cfg,interval,...] [--out nbs/guidance_study.json]

For each cell: class adherence overall and per class (the model card's classifier), diversity (mean pairwise MS-SSIM within a class, against the
real training slices'), the Fréchet distance on the stand-in features against the real held-out floor, the memorization share, and seconds per image.
Cells that are provably the same images as plain CFG (every method but cfg++ and threshold at w = 1 reduces to the conditional prediction) are
computed once and listed as such. Results are appended to --out after every cell, so a killed run resumes where it stopped.
"""
import argparse, json, os, time
from pathlib import Path
import torch
from mri_diffusion_nb.data import mni152_slices
from mri_diffusion_nb.files import atomic_path
from mri_diffusion_nb.guidance import GUIDANCE_METHODS, Guidance, step_scale
from mri_diffusion_nb.adherence import load_classifier
from mri_diffusion_nb.report import evaluate, real_reference
from mri_diffusion_nb.sampling import find_weights, load_model, make_scheduler, sample

SAME_AS_CFG_AT_1 = ('interval', 'rescale', 'apg', 'auto')  # w = 1: each of these is the conditional prediction alone, image for image

def nfe(m, sampler:str, steps:int, w:float, method:str)->int:
    "U-Net evaluations per image: one pass where a step needs only the conditional prediction, two elsewhere (autoguidance: one of them on the weak model)."
    g = Guidance.parse(method)
    return sum(1 if step_scale(g, w, m.schedule, t) == 1 and g.method != 'cfg++' else 2 for t in make_scheduler(m.schedule, sampler, steps).timesteps)

def cell(m, clf, real, ctx, classes, sampler, steps, w, method, batch):
    t0 = time.time()
    x = sample(m, classes=classes, guidance=w, sampler=sampler, steps=steps, seed=0, batch_size=batch, net_batch=batch, guidance_method=method)
    dt = time.time() - t0
    r = evaluate(real, x, classes, feature='standin', classifier=clf, progress=False, figures=False, context=ctx)
    ca, dv = r['class_adherence'], r['diversity']['per_class']
    return dict(sampler=f"{sampler}-{steps}", guidance=w, method=str(Guidance.parse(method)), adherence=ca['accuracy'],
                per_class=[v['accuracy'] for v in ca['per_class'].values()],
                ms_ssim=sum(v['fake'] for v in dv.values())/len(dv), ms_ssim_real=sum(v['real'] for v in dv.values())/len(dv),
                fd_standin=r['fid']['value'], fd_floor=r.get('floor', {}).get('fid'), memorization=r['memorization']['closer_share'],
                s_per_image=dt/len(classes), n=len(classes), nfe=nfe(m, sampler, steps, w, method))

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--model', default='demo'); ap.add_argument('--per-class', type=int, default=32)
    ap.add_argument('--guidance', default='7,3,1'); ap.add_argument('--samplers', default='dpm-sde-20,dpm-20,ddim-50,ddpm-1000')
    ap.add_argument('--methods', default=','.join(GUIDANCE_METHODS)); ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--out', default='guidance_study.json')
    a = ap.parse_args()
    m = load_model(a.model)
    clf = load_classifier(find_weights('demo')[0].parent/'classifier.safetensors')
    real = mni152_slices(res=m.res)
    ctx = real_reference(real, feature='standin', progress=False)
    classes = torch.arange(m.n_classes).repeat_interleave(a.per_class)
    out = Path(a.out); res = json.loads(out.read_text()) if out.exists() else dict(rows=[])
    res['protocol'] = (f"model {a.model} (hash {m.hash}), {a.per_class} per class, seed 0 (image i's noise from (0, i): the same start for every cell), "
                       f"fp32 on {torch.get_num_threads()} CPU threads ({os.cpu_count()} cores), batch {a.batch}; adherence: the model card's classifier; "
                       f"diversity: mean pairwise MS-SSIM within a class (lower = more diverse), real training slices alongside; Fréchet distance on the stand-in "
                       f"features (not comparable with published FID) with the real held-out floor; memorization: share of samples closer to a training slice "
                       f"than 95 % of held-out real slices are")
    for r in res['rows']:  # rows written before the count was recorded
        if 'nfe' not in r: r['nfe'] = nfe(m, r['sampler'].rsplit('-', 1)[0], int(r['sampler'].rsplit('-', 1)[1]), r['guidance'], r['method'])
    done = {(r['sampler'], r['guidance'], r['method']) for r in res['rows']}
    for w in (float(v) for v in a.guidance.split(',')):  # in the order given: the most wanted cells first
        for spec in a.samplers.split(','):
            sampler, steps = spec.rsplit('-', 1)
            for method in a.methods.split(','):
                name = str(Guidance.parse(method))
                if (f"{sampler}-{steps}", w, name) in done: continue
                if w == 1 and method in SAME_AS_CFG_AT_1:
                    base = next((r for r in res['rows'] if (r['sampler'], r['guidance'], r['method']) == (f"{sampler}-{steps}", w, 'cfg')), None)
                    if base is None: continue
                    row = dict(base, method=name, same_as='cfg')
                else: row = cell(m, clf, real, ctx, classes, sampler, int(steps), w, method, a.batch)
                res['rows'].append(row)
                with atomic_path(out) as tmp: tmp.write_text(json.dumps(res, indent=1))
                print(f"{row['sampler']:<11} w={w:<4g} {name:<28} adherence {row['adherence']:6.1%} per class "
                      + ' / '.join(f"{v:.0%}" for v in row['per_class']) + f"  MS-SSIM {row['ms_ssim']:.3f} (real {row['ms_ssim_real']:.3f})"
                      + f"  FD {row['fd_standin']:.2f}  mem {row['memorization']:.0%}  {row['s_per_image']:.2f} s/img", flush=True)

if __name__ == '__main__': main()
