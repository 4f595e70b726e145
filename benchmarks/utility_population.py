"""Train on synthetic, test on real, on the simulated population (issue 26, chapter 28).

    OMP_NUM_THREADS=2 python benchmarks/utility_population.py --store ~/runs/pop/store160

Protocol: the real data is the shipped `demo-population` model's own store (`--store`: the population's subjects
0-159; its train split is what the model was trained on, its validation split, 20 % of the subjects, was never seen
by the model and is the test set). `--n` slices are generated (dpm-sde, 20 steps, w = `--guidance`, seed 0, the two
classes in turn, labelled with their intended class). `downstream.utility_experiment` trains the same small
classifier (tumour / no tumour, 32 px) on real slices at each share of `--fractions` and at 100 %, on the generated
slices alone, and on each real share plus the generated slices, `--seeds` seeds each, `--steps` steps, and tests
every classifier on all the held-out subjects' slices. Intervals: t over seeds for each condition, Wilson for one
test set, and a bootstrap over seeds for the real share the generated slices replace. Writes
`benchmarks/results/utility_population.json`."""
import argparse, json, os, platform, tempfile, time
from pathlib import Path
import torch

HERE = Path(__file__).resolve().parent


def main():
    from mri_diffusion_nb.downstream import utility_experiment, utility_markdown, utility_results
    from mri_diffusion_nb.generate import generate
    from mri_diffusion_nb.sampling import load_model
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--store', type=Path, required=True)
    ap.add_argument('--n', type=int, default=600)
    ap.add_argument('--guidance', type=float, default=7.0)
    ap.add_argument('--fractions', default='0.01,0.02,0.05,0.1,0.25,0.5')
    ap.add_argument('--seeds', type=int, default=5)
    ap.add_argument('--steps', type=int, default=300)
    a = ap.parse_args()
    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:
        generate(load_model('demo-population'), Path(d)/'fake', n=a.n, guidance=a.guidance, sampler='dpm-sde',
                 steps=20, seed=0, progress=True, autocast=True)
        t_gen = time.time() - t0
        rep = utility_experiment(str(a.store.expanduser()), Path(d)/'fake',
                                 fractions=tuple(float(f) for f in a.fractions.split(',')),
                                 seeds=tuple(range(a.seeds)), steps=a.steps, progress=True)
    print(utility_markdown(rep))
    out = dict(utility_results(rep), benchmark=dict(
        protocol=__doc__.split('\n\n', 2)[2], command=f'python benchmarks/utility_population.py --store {a.store}',
        model='demo-population', guidance=a.guidance, n_generated=a.n, seconds_generating=t_gen,
        seconds=time.time() - t0, torch=torch.__version__, machine=platform.machine(), cpus=os.cpu_count(),
        threads=torch.get_num_threads()))
    (HERE/'results'/'utility_population.json').write_text(json.dumps(out, indent=1, default=float) + '\n')
    print(f"wrote {HERE/'results'/'utility_population.json'} in {out['benchmark']['seconds']:.0f} s")


if __name__ == '__main__':
    main()
