"""Data at scale (issue 12): build time per volume with 1 and 2 workers, peak memory of `mri-diffusion data` for 40 and 400 subjects,
peak memory of a few real `mri-diffusion train` steps (paper preset, 256 px) reading 5,000- and 50,000-slice stores, and DataLoader throughput at 256 px against what one A100 consumes.

    OMP_NUM_THREADS=1 python benchmarks/data_scale.py            # about 10 minutes on a 2-core CPU
    python benchmarks/data_scale.py --small 20 --large 200 --slices 2000 20000   # quicker

Generated data only (nothing is downloaded). Every figure is printed in one table at the end."""
import argparse, json, os, resource, shutil, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np

HERE = Path(__file__).resolve().parent
EXE = str(Path(sys.executable).parent/'mri-diffusion')

def peak_rss_mb(cmd:list, env=None)->tuple:
    "Run `cmd` in a fresh watcher process; returns (peak RSS in MB of the largest process in its tree, seconds, stdout)."
    watcher = ("import resource, subprocess, sys, time; t = time.time(); r = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
               "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.time() - t); print(r.stdout[-3000:]); print(r.stderr[-3000:], file=sys.stderr)")
    r = subprocess.run([sys.executable, '-c', watcher, *map(str, cmd)], capture_output=True, text=True, env=env)
    head, *rest = r.stdout.split('\n', 1)
    code, kb, sec = head.split()
    if code != '0': raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{r.stderr[-2000:]}")
    return int(kb)/1024, float(sec), rest[0] if rest else ''

def small_heads(folder:Path, n:int, seed:int=0):
    "n small generated heads (ellipsoid with a bright rim and structure, 4 mm voxels, varied size) as NIfTI files."
    import nibabel as nib
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    g = np.meshgrid(*[np.arange(k) - k/2 for k in (44, 52, 40)], indexing='ij')
    for i in range(n):
        a = rng.uniform(15, 19, 3)
        r = np.sqrt(sum((c/s)**2 for c, s in zip(g, (a[0], a[1], a[2]*0.9))))
        v = np.where(r < 1, 600 + 200*np.cos(6*r) + rng.normal(0, 20, r.shape), 0) + np.where((r > 0.92) & (r < 1.05), 900, 0)
        nib.save(nib.Nifti1Image(v.astype(np.float32), np.diag([4., 4, 4, 1])), folder/f'sub-{i:04d}.nii.gz')

def template_copies(folder:Path, n:int):
    "n copies of the 1 mm MNI template (real size: 193 x 229 x 193 voxels)."
    from mri_diffusion_nb.data import mni152_path
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n): shutil.copy(mni152_path(), folder/f'mni-{i:02d}.nii.gz')

def synthetic_store(out:Path, n_slices:int, res:int=256, per_shard:int=100):
    "A store of `n_slices` slices written directly in the store's format (uint8 shards, index.json), for reading benchmarks."
    from mri_diffusion_nb.store import STORE_FORMAT
    sh = out/'shards'; sh.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0); base = rng.integers(0, 256, (per_shard, res, res), dtype=np.uint8)
    vols = []
    for k in range(-(-n_slices//per_shard)):
        n = min(per_shard, n_slices - k*per_shard); key = f'{k:020d}'
        np.save(sh/f'{key}.npy', np.roll(base[:n], k, axis=-1), allow_pickle=False)
        vols.append(dict(key=key, subject=f's{k//2:05d}', image=f's{k}.nii.gz', seg=None, n=n, labels=[int(j*4//n) for j in range(n)],
                         slice_index=list(range(n)), level=[j/max(n - 1, 1) for j in range(n)], tumour_mm2=None, split='val' if k % 5 == 0 else 'train'))
    s = dict(source='synthetic', res=res, axis='axial', fov_mm=240., pixel_mm=240/res, slice_mm=1., min_brain=.15, pct=[.5, 99.5], label='level',
             n_classes=4, dtype='uint8', skipped=[])
    (out/'index.json').write_text(json.dumps(dict(format=STORE_FORMAT, settings=s, class_names=['a', 'b', 'c', 'd'], volumes=vols,
                                                  storage=dict(dtype='uint8', decode='x = q*2/max - 1'))))

def throughput(store:str, batch:int=64, workers:int=2, n_batches:int=40, path:str='training')->float:
    """Images per second delivered after 3 warm-up batches. `path='training'`: chapter 16's loader (`StepBatches`: each item is a
    whole batch read in one call, no collation, shuffling a function of (seed, step)); `'dataset'`: `SliceDataset` with default collation."""
    import torch
    from mri_diffusion_nb.store import open_data, SliceDataset
    d = open_data(store)
    if path == 'training':
        from mri_diffusion_nb.training import StepBatches, step_loader
        dl = step_loader(StepBatches(d, batch), 0, n_batches + 3, workers=workers)
    else:
        dl = torch.utils.data.DataLoader(SliceDataset(d.train), batch_size=batch, shuffle=True, num_workers=workers,
                                         generator=torch.Generator().manual_seed(0), prefetch_factor=4 if workers else None)
    it = iter(dl); n_batches = min(n_batches, len(dl) - 3)
    for _ in range(3): next(it)
    t = time.perf_counter(); n = 0
    for _ in range(n_batches): n += len(next(it)[0])
    return n/(time.perf_counter() - t)

def a100_rows(rows:list, measured:float):
    "What one A100 consumes training the paper preset, and the ratio to `measured` images/s."
    flops = 3*496e9  # chapter 12: paper U-Net, 496 GFLOP per forward at 256 px; a training step (forward + backward) is about 3 forwards
    a100 = 0.4*312e12/flops
    rows.append(('one A100 training the paper preset (3 x 496 GFLOP/image at 40% MFU of 312 TFLOP/s bf16)', f'{a100:.0f} images/s'))
    rows.append(('  best DataLoader figure / A100 consumption (goal >= 5)', f'{measured/a100:.1f}x'))

def loader_rows(rows:list, store:str):
    "Throughput of both loading paths with 0 and 2 workers, then the A100 comparison."
    best = 0.
    for path in ('training', 'dataset'):
        for w in (0, 2):
            v = throughput(store, workers=w, path=path); best = max(best, v)
            rows.append((f'DataLoader throughput, 256 px, shuffled, batch 64, {w} workers, {path} path', f'{v:.0f} images/s'))
    a100_rows(rows, best)

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--small', type=int, default=40); p.add_argument('--large', type=int, default=400)
    p.add_argument('--slices', type=int, nargs=2, default=[5000, 50000])
    p.add_argument('--volumes', type=int, default=6, help='template copies for the build-time comparison')
    p.add_argument('--parts', default='build,data,train,loader', help='comma-separated subset of build,data,train,loader')
    p.add_argument('--throughput-only', type=int, metavar='SLICES', help='only the DataLoader rows, on a store of this many slices')
    p.add_argument('--train-steps', type=int, default=2, help='optimizer steps of the real paper-preset `train` per store (default 2)')
    a = p.parse_args()
    if a.throughput_only:
        root, rows = Path(tempfile.mkdtemp(prefix='data_scale-')), []
        try: synthetic_store(root/'s', a.throughput_only); loader_rows(rows, str(root/'s'))
        finally: shutil.rmtree(root, ignore_errors=True)
        w = max(len(r[0]) for r in rows); print('\n'.join(f'{k:<{w}}  {v}' for k, v in rows)); return
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    root = Path(tempfile.mkdtemp(prefix='data_scale-'))
    rows = []
    try:
        parts = set(a.parts.split(','))
        from mri_diffusion_nb.store import plan_source, build_store
        if 'build' in parts: template_copies(root/'tpl', a.volumes)
        for w in ((1, 2) if 'build' in parts else ()):  # in this process, so that interpreter start-up is not counted; worker start-up (spawn) is
            jobs, names, s = plan_source(str(root/'tpl'), res=256)
            t = time.perf_counter(); build_store(jobs, root/f'tpl-{w}', s, names, workers=w, progress=False)
            rows.append((f'build, {a.volumes} template volumes (193x229x193 at 1 mm) to 256 px, {w} worker(s)', f'{(time.perf_counter() - t)/a.volumes:.2f} s/volume'))
        for n in ((a.small, a.large) if 'data' in parts else ()):
            small_heads(root/f'heads{n}', n)
            mb, sec, _ = peak_rss_mb([EXE, 'data', '--source', root/f'heads{n}', '--res', 256, '--slice-mm', 4, '--out', root/f'heads{n}-store'], env)
            sl = sum(v['n'] for v in json.loads((root/f'heads{n}-store'/'index.json').read_text())['volumes'])
            rows.append((f'mri-diffusion data, {n} generated subjects at 256 px ({sl} slices), peak RSS', f'{mb:.0f} MB ({sec:.0f} s)'))
        if 'data' in parts:
            rss = [float(r[1].split()[0]) for r in rows[-2:]]
            rows.append((f'  ratio {a.large} / {a.small} subjects (goal <= 1.25)', f'{rss[1]/rss[0]:.2f}'))
        for n in (a.slices if 'train' in parts or 'loader' in parts else ()):
            synthetic_store(root/f'store{n}', n)
            if 'train' not in parts: continue
            cmd = [EXE, 'train', '--preset', 'paper', '--data', root/f'store{n}', '--out', root/f'run{n}', '--steps', a.train_steps,
                   '--batch-size', 1, '--grad-accum', 1, '--workers', 2, '--mixed-precision', 'bf16', '--sample-every', 0, '--ckpt-every', 1000]
            mb, sec, _ = peak_rss_mb(cmd, env)
            rows.append((f'mri-diffusion train --preset paper, {a.train_steps} steps of batch 1 (--mixed-precision bf16, fp32 where not native; 2 loader workers) on a {n}-slice 256 px store, peak RSS', f'{mb:.0f} MB ({sec:.0f} s)'))
        if 'train' in parts:
            rss = [float(r[1].split()[0]) for r in rows[-2:]]
            rows.append((f'  ratio {a.slices[1]} / {a.slices[0]} slices (goal <= 1.25)', f'{rss[1]/rss[0]:.2f}'))
        if 'loader' in parts: loader_rows(rows, str(root/f'store{a.slices[1]}'))
    finally: shutil.rmtree(root, ignore_errors=True)
    w = max(len(r[0]) for r in rows)
    print('\n'.join(f'{k:<{w}}  {v}' for k, v in rows))

if __name__ == '__main__': main()
