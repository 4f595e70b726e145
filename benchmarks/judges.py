"""Two judges on the guidance study's contested images (issue 26, chapters 24 and 26).

    OMP_NUM_THREADS=2 python benchmarks/judges.py [--per-class 32]

Protocol: the demo model and the built-in slices at 64 px. Judge A is the shipped class judge (the model card's
classifier); judge B is a position judge (`train_classifier(target='level')`, 400 steps, seed 0), written to
`mri_diffusion_nb/assets/demo/position_judge.safetensors`. Both are validated on the held-out real slices
(`judge_validation`). Then, for every (sampler, method) below at w = 7, `--per-class` images per class are sampled
exactly as `benchmarks/guidance_methods.py` samples them (seed 0, the same starting noise for every cell), and
`judges_agree` scores them with both judges: adherence with Wilson 95 % intervals, agreement, Cohen's kappa, and for
every image where the judges differ, the level judge B reads and its distance to the nearest class boundary.
Writes `benchmarks/results/judges.json`. With `--gallery SAMPLER:METHOD` it samples that row again (the same images)
and writes `benchmarks/results/judges_disagreements.png`: the images where the judges differ, each with both verdicts
and the level the position judge reads."""
import argparse, json, os, platform, time
from pathlib import Path
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ROWS = [('dpm-sde-20', 'cfg'), ('dpm-20', 'cfg'), ('dpm-20', 'apg'), ('dpm-20', 'threshold'), ('ddim-50', 'cfg')]


def sample_row(m, classes, sampler:str, method:str, w:float):
    "The images of one study row ('dpm-20', 'apg'), sampled as `benchmarks/guidance_methods.py` samples them."
    from mri_diffusion_nb.sampling import sample
    name, steps = sampler.rsplit('-', 1)
    return sample(m, classes=classes, guidance=w, sampler=name, steps=int(steps), seed=0, batch_size=32, net_batch=32,
                  guidance_method=method)


def gallery(m, judge_a, judge_b, classes, row:str, w:float, k:int=16):
    "The first `k` images of a row where the two judges differ, titled with the intended class and both verdicts."
    from mri_diffusion_nb.data import show_grid
    sampler, method = row.split(':')
    x = sample_row(m, classes, sampler, method, w)
    pa, pb, lv = judge_a.predict(x), judge_b.predict(x), judge_b.outputs(x)[:, 0]
    idx = torch.nonzero(pa != pb).flatten()[:k]
    titles = [f"asked {int(classes[i])}: A {int(pa[i])}, B {int(pb[i])} (level {float(lv[i]):.2f})" for i in idx]
    fig = show_grid(x[idx], titles, ncols=8, size=1.6, dpi=100,
                    suptitle=f'{sampler} {method}, w = {w:g}: where the class judge (A) and the position judge (B) differ')
    fig.savefig(HERE/'results'/'judges_disagreements.png', dpi=100)
    print(f"wrote {HERE/'results'/'judges_disagreements.png'} ({len(idx)} images)")


def main():
    from mri_diffusion_nb.adherence import (boundary_distance, judge_validation, judges_agree, load_classifier,
                                            save_classifier, train_classifier)
    from mri_diffusion_nb.data import mni152_slices
    from mri_diffusion_nb.sampling import _demo_dir, load_model
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--per-class', type=int, default=32)
    ap.add_argument('--guidance', type=float, default=7.0)
    ap.add_argument('--gallery', help='SAMPLER:METHOD: only draw the disagreements of that row (judge B must exist)')
    a = ap.parse_args()
    if a.gallery:
        m, classes = load_model('demo'), torch.arange(4).repeat_interleave(a.per_class)
        return gallery(m, load_classifier(_demo_dir()/'classifier.safetensors'),
                       load_classifier(_demo_dir()/'position_judge.safetensors'), classes, a.gallery, a.guidance)
    t0 = time.time()
    ds, m = mni152_slices(64), load_model('demo')
    judge_a = load_classifier(_demo_dir()/'classifier.safetensors')
    judge_b = train_classifier(ds, steps=400, target='level', progress=False)
    save_classifier(judge_b, _demo_dir()/'position_judge.safetensors')
    res = dict(validation={'class judge (shipped)': judge_validation(judge_a, ds),
                           'position judge': judge_validation(judge_b, ds)}, rows=[])
    classes = torch.arange(m.n_classes).repeat_interleave(a.per_class)
    for sampler, method in ROWS:
        t1 = time.time()
        x = sample_row(m, classes, sampler, method, a.guidance)
        r = judges_agree(judge_a, judge_b, x, classes)
        lv = judge_b.outputs(x)[:, 0]
        d = boundary_distance(lv, m.n_classes)
        r['differ_detail'] = [dict(image=i, intended=int(classes[i]), judge_a=r['pred_a'][i], judge_b=r['pred_b'][i],
                                   level_b=float(lv[i]), boundary_distance=float(d[i])) for i in r['differ']]
        r.update(sampler=sampler, method=method, guidance=a.guidance, seconds=time.time() - t1)
        for k in ('pred_a', 'pred_b'): r.pop(k)
        res['rows'].append(r)
        print(f"{sampler} {method}: A {r['a']['adherence']:.3f} B {r['b']['adherence']:.3f} "
              f"agree {r['agreement']:.3f} kappa {r['kappa']:.3f} ({r['seconds']:.0f} s)")
    out = dict(protocol=__doc__.split('\n\n', 2)[2], command='python benchmarks/judges.py', per_class=a.per_class,
               model=m.hash, torch=torch.__version__, machine=platform.machine(), cpus=os.cpu_count(),
               threads=torch.get_num_threads(), seconds=time.time() - t0, **res)
    (HERE/'results'/'judges.json').write_text(json.dumps(out, indent=1, default=float) + '\n')
    print(f"wrote {HERE/'results'/'judges.json'} in {out['seconds']:.0f} s")


if __name__ == '__main__':
    main()
