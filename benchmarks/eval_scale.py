"""How `evaluate` scales: time and peak memory for N and 2N generated slices against 10N real ones, and the FLOPs it spends.

    OMP_NUM_THREADS=1 python benchmarks/eval_scale.py            # N = 1000 at 64 px, on CUDA when available
    python benchmarks/eval_scale.py --n 500 --device cpu         # quicker

The real set is a lazy on-disk store (uint8 memory-mapped, read in chunks, as `store.open_data` gives), built once
from the built-in slices with random shifts and noise; the generated slices are noisy copies of real ones (no model
needed: the metrics' cost does not depend on what the pixels show). Every size runs in a fresh process, so the peak
resident memory (`ru_maxrss`) is that size's alone. The FLOPs are counted with `torch.utils.flop_counter` on the N run
and extrapolated to the reference setup (12,500 generated vs 65,000 training slices at 256 px, on a GPU).
"""
import argparse, json, os, resource, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np
import torch

class MemmapImages:
    "Lazy (N, 1, res, res) float32 images in [-1, 1] from a uint8 memory-mapped file; indexing reads only what it returns."
    def __init__(self, path, n, res, pos=None):
        self.path, self.n, self.res, self.pos = str(path), n, res, pos
        self.a = np.load(self.path, mmap_mode='r')
    def __len__(self): return self.n if self.pos is None else len(self.pos)
    @property
    def shape(self): return torch.Size((len(self), 1, self.res, self.res))
    def __getitem__(self, key):
        if isinstance(key, slice): g = np.arange(*key.indices(len(self)))
        else: g = np.asarray(key.cpu() if isinstance(key, torch.Tensor) else key, dtype=np.int64).reshape(-1)
        if self.pos is not None: g = self.pos[g]
        o = np.argsort(g)  # read in file order
        x = np.empty((len(g), self.res, self.res), np.float32)
        x[o] = self.a[g[o]].astype(np.float32)/127.5 - 1
        return torch.from_numpy(x)[:, None]

class LazyReal:
    "The duck type of `SliceData`/`StoreData` that `evaluate` needs, with lazy images and index views for the splits."
    def __init__(self, path, labels, is_val, res, class_names, pos=None):
        self.labels_all, self.is_val, self.path, self.res, self.class_names = labels, is_val, path, res, class_names
        self.pos = np.arange(len(labels)) if pos is None else pos
        self.images = MemmapImages(path, len(labels), res, None if pos is None else self.pos)
        self.labels = torch.from_numpy(labels[self.pos])
        self.settings = dict(source='benchmark (built-in slices, shifted and noisy)', res=res)
        self.n_classes = len(class_names)
    def __len__(self): return len(self.pos)
    def _view(self, val): return LazyReal(self.path, self.labels_all, self.is_val, self.res, self.class_names, self.pos[self.is_val[self.pos] == val])
    @property
    def train(self): return self._view(False)
    @property
    def val(self): return self._view(True)

def make_real(folder, n, res, seed=0):
    "Write n real-looking slices (uint8) with labels and a 20 % held-out split; returns the .npy path, labels, split."
    from mri_diffusion_nb.data import mni152_slices
    base = mni152_slices(res=res)
    g = torch.Generator().manual_seed(seed)
    out = np.lib.format.open_memmap(folder/'real.npy', mode='w+', dtype=np.uint8, shape=(n, res, res))
    labels = np.empty(n, np.int64)
    for s in range(0, n, 1000):
        k = min(1000, n - s)
        i = torch.randint(len(base), (k,), generator=g)
        x = base.images[i]
        dy, dx = torch.randint(-3, 4, (2,), generator=g).tolist()
        x = torch.roll(x, (dy, dx), (-2, -1)) + 0.05*torch.randn(x.shape, generator=g)
        out[s:s + k] = ((x.clamp(-1, 1)[:, 0] + 1)*127.5).round().numpy().astype(np.uint8)
        labels[s:s + k] = base.labels[i].numpy()
    out.flush(); del out
    return folder/'real.npy', labels, (np.arange(n) % 5 == 2), list(base.class_names)

def child(args):
    "One size in a fresh process: set up, time `evaluate`, then count its FLOPs; print a JSON line."
    from mri_diffusion_nb import adherence, features, report as M
    torch.set_num_threads(args.threads)
    meta = json.loads(Path(args.meta).read_text())
    real = LazyReal(meta['path'], np.array(meta['labels']), np.array(meta['is_val']), meta['res'], meta['class_names'])
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(len(real), (args.n_fake,), generator=g)
    fake = (real.images[idx] + 0.1*torch.randn(args.n_fake, 1, real.res, real.res, generator=g)).clamp(-1, 1)
    labels = real.labels[idx]
    dev = torch.device(args.device)
    clf = adherence.train_classifier(real, steps=30, progress=False, device=dev)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024
    if dev.type == 'cuda': torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    t0, c0 = time.perf_counter(), time.process_time()
    rep = M.evaluate(real, fake, labels, feature='standin', classifier=clf, device=dev, progress=False)
    if dev.type == 'cuda': torch.cuda.synchronize()
    t, c = time.perf_counter() - t0, time.process_time() - c0
    out = dict(n_fake=args.n_fake, n_real=len(real), n_train=len(real.train), n_val=len(real.val), seconds=t, cpu_seconds=c,
               peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024, setup_rss_mb=base_rss,
               gpu_peak_mb=torch.cuda.max_memory_allocated()/2**20 if dev.type == 'cuda' else None, fid=rep['fid']['value'],
               closer_share=rep['memorization']['closer_share'])
    if args.count_flops:
        from torch.utils.flop_counter import FlopCounterMode
        features._FEATURES.clear()
        with FlopCounterMode(display=False) as fc: M.evaluate(real, fake, labels, feature='standin', classifier=clf, device=dev, figures=False, progress=False)
        out['flops'] = fc.get_total_flops()
    print('RESULT ' + json.dumps(out))

def inception_flops():
    "FLOPs of one Inception-v3 forward at 299 px (torchvision's architecture, random weights: the count does not depend on them)."
    from torch.utils.flop_counter import FlopCounterMode
    import torchvision
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc: net(torch.zeros(1, 3, 299, 299))
    return fc.get_total_flops()

def model_flops(n, m, k, audit_res=64, shifts=9, feat=None, n_classes=4, pairs=300, res=64):
    "The cost model: features of every image, the chunked exact search (fake vs train, fake vs held-out, held-out vs train), MS-SSIM pairs."
    d = audit_res**2
    search = 2*shifts*d*(n*m + n*k + k*m)
    return dict(search=search, features=(feat or 0)*(n + m + k))

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--n', type=int, default=1000); p.add_argument('--res', type=int, default=64)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu'); p.add_argument('--threads', type=int, default=1)
    p.add_argument('--child', action='store_true'); p.add_argument('--n-fake', type=int); p.add_argument('--meta'); p.add_argument('--count-flops', action='store_true')
    a = p.parse_args()
    if a.child: return child(a)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        path, labels, is_val, names = make_real(d, 10*a.n, a.res)
        (d/'meta.json').write_text(json.dumps(dict(path=str(path), labels=labels.tolist(), is_val=is_val.tolist(), res=a.res, class_names=names)))
        rows = []
        for nf, count in ((a.n, True), (2*a.n, False)):
            cmd = [sys.executable, __file__, '--child', '--n-fake', str(nf), '--meta', str(d/'meta.json'), '--device', a.device, '--threads', str(a.threads)]
            r = subprocess.run(cmd + (['--count-flops'] if count else []), capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=str(a.threads)))
            if r.returncode: sys.exit(r.stderr)
            rows.append(json.loads([l for l in r.stdout.splitlines() if l.startswith('RESULT ')][-1][7:]))
    dev = torch.cuda.get_device_name() if a.device.startswith('cuda') else f'CPU ({a.threads} thread{"s"*(a.threads > 1)})'
    print(f"evaluate at {a.res} px on {dev}: stand-in features, classifier, figures; real set lazy (uint8 memory-mapped, read in chunks)")
    print(f"{'generated':>9} {'real':>6} {'train':>6} {'held-out':>8} {'wall s':>8} {'CPU s':>8} {'peak RSS MB':>11} {'setup RSS MB':>12}")
    for r in rows: print(f"{r['n_fake']:>9} {r['n_real']:>6} {r['n_train']:>6} {r['n_val']:>8} {r['seconds']:>8.1f} {r['cpu_seconds']:>8.1f} {r['peak_rss_mb']:>11.0f} {r['setup_rss_mb']:>12.0f}")
    tr, mr = rows[1]['seconds']/rows[0]['seconds'], rows[1]['peak_rss_mb']/rows[0]['peak_rss_mb']
    cr = rows[1]['cpu_seconds']/rows[0]['cpu_seconds']
    print(f"2N/N: wall time {tr:.2f}x (limit 2.5x: {'ok' if tr <= 2.5 else 'OVER'}), CPU time {cr:.2f}x (the figure a shared machine cannot distort), "
          f"peak memory {mr:.2f}x (limit 1.5x: {'ok' if mr <= 1.5 else 'OVER'})")
    r0 = rows[0]; n, m, k = r0['n_fake'], r0['n_train'], r0['n_val']
    model = model_flops(n, m, k)
    print(f"FLOPs at N={n}: measured {r0['flops']:.3g}; the exact search's model 2*9*64^2*(N*M + N*K + K*M) = {model['search']:.3g} "
          f"({model['search']/r0['flops']:.0%} of measured); measured throughput {r0['flops']/r0['seconds']/1e9:.1f} GFLOP/s")
    fi = inception_flops()
    N, M_, K = 12_500, 65_000, 16_250  # held-out: 20 % of subjects beside 65,000 training slices
    big = model_flops(N, M_, K, feat=fi)
    rest = r0['flops'] - model['search']  # features (stand-in), MS-SSIM pairs, classifier: per image or constant
    other = rest*(N + M_ + K)/(n + m + k)
    tflops_mm, tflops_conv = 0.5*19.5e12, 0.3*156e12
    t_big = big['search']/tflops_mm + big['features']/tflops_conv + other/tflops_mm
    io_gb = 3*(M_ + K)*256*256/1e9
    print(f"Extrapolated to {N:,} generated vs {M_:,} train + {K:,} held-out at 256 px (audit at 64 px, Inception-v3 features at 299 px, "
          f"{fi/1e9:.1f} GFLOP/image): search {big['search']:.3g} FLOP, Inception {big['features']:.3g} FLOP, rest {other:.3g} FLOP; "
          f"on an A100 at 50 % of 19.5 TFLOP/s FP32 (matmuls, no TF32) and 30 % of 156 TFLOP/s TF32 (convolutions): about {t_big/60:.1f} min of compute, "
          f"plus reading about {io_gb:.0f} GB of uint8 real slices (3 passes: hash, features, audit)")
    print(json.dumps(dict(rows=rows, time_ratio=tr, cpu_time_ratio=cr, memory_ratio=mr, inception_flops=fi, extrapolated=dict(big, other=other, minutes=t_big/60))))

if __name__ == '__main__': main()
