"""The population at growing sizes (issue 25): `mri-diffusion population --layout brats` then `mri-diffusion data
--modality t1 --res 64` on the result, each timed with its peak memory, and the store's tumour labels checked slice by
slice against the population's truth table (`store.truth_agreement`).

    OMP_NUM_THREADS=1 python benchmarks/population_scale.py --sizes 20 200 --workers 2 --keep ~/runs/pop
    (about 15 minutes for 200 subjects on a 2-core CPU)

Writes `benchmarks/results/population_scale.json`; the population and the store of the largest size stay in `--keep`
(the segmentation instrument trains on them)."""
import argparse, json, os, platform, shutil, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from data_scale import EXE, peak_rss_mb  # noqa: E402


def agreement(store:Path)->dict:
    "The store's tumour labels against the population's truth, totalled over subjects."
    from mri_diffusion_nb.store import truth_agreement, read_index
    rows = truth_agreement(store)
    tot = {k: sum(r[k] for r in rows) for k in ('slices', 'store_tumour', 'truth_tumour', 'agree')}
    return dict(tot, subjects=len(rows), subjects_equal=sum(r['store_tumour'] == r['truth_tumour'] for r in rows),
                max_gap_mm2=round(max(r['gap_mm2'] for r in rows), 1),
                threshold_mm2=read_index(store)['settings']['tumour_mm2'])


def one_size(n:int, root:Path, workers:int, res:int)->dict:
    "Make a population of `n`, build its store, compare with the truth."
    pop, store = root/f'pop{n}', root/f'store{n}'
    mb_p, s_p, _ = peak_rss_mb([EXE, 'population', '--n', n, '--layout', 'brats', '--workers', workers, '--out', pop])
    mb_d, s_d, _ = peak_rss_mb([EXE, 'data', '--source', pop, '--modality', 't1', '--res', res, '--workers', workers,
                                '--out', store])
    out = dict(subjects=n, workers=workers, res=res,
               population=dict(seconds=round(s_p, 1), s_per_subject=round(s_p/n, 2), peak_rss_mb=round(mb_p)),
               data=dict(seconds=round(s_d, 1), s_per_subject=round(s_d/n, 2), peak_rss_mb=round(mb_d)),
               disk_mb=dict(population=round(sum(f.stat().st_size for f in pop.rglob('*') if f.is_file())/2**20),
                            store=round(sum(f.stat().st_size for f in store.rglob('*') if f.is_file())/2**20)),
               agreement=agreement(store))
    print(json.dumps(out), flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--sizes', type=int, nargs='+', default=[20, 200])
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--res', type=int, default=64)
    ap.add_argument('--keep', type=Path, default=None, help='keep the runs here (default: a temporary folder)')
    ap.add_argument('--recheck', action='store_true', help='only recompute the agreement of the kept stores')
    a = ap.parse_args()
    f = HERE/'results'/'population_scale.json'
    if a.recheck:  # the truth comparison changed, the timed runs did not: check the kept stores again
        res = json.loads(f.read_text())
        for r in res['runs']: r['agreement'] = agreement(a.keep.expanduser()/f"store{r['subjects']}")
        f.write_text(json.dumps(res, indent=1) + '\n')
        return print(json.dumps([r['agreement'] for r in res['runs']]))
    root = a.keep.expanduser() if a.keep else Path(os.environ.get('TMPDIR', '/tmp'))/f'popscale-{os.getpid()}'
    root.mkdir(parents=True, exist_ok=True)
    runs = [one_size(n, root, a.workers, a.res) for n in a.sizes]
    small, big = runs[0], runs[-1]
    res = dict(protocol=__doc__.split('\n\n')[0].replace('\n', ' '), machine=dict(cpus=os.cpu_count(),
               python=platform.python_version()), date=time.strftime('%Y-%m-%d'), runs=runs,
               ratio=dict(subjects=big['subjects']/small['subjects'],
                          population_s_per_subject=big['population']['s_per_subject']/small['population']['s_per_subject'],
                          data_peak_rss=big['data']['peak_rss_mb']/small['data']['peak_rss_mb'],
                          population_peak_rss=big['population']['peak_rss_mb']/small['population']['peak_rss_mb']))
    f.write_text(json.dumps(res, indent=1) + '\n')
    print(f'sizes {a.sizes}: population s/subject ratio {res["ratio"]["population_s_per_subject"]:.2f}, '
          f'data peak RSS ratio {res["ratio"]["data_peak_rss"]:.2f}; wrote {f}')
    if not a.keep: shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
    main()
