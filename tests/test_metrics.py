"Tests for the evaluation modules (weights, features, frechet, paired, memorization, adherence, metrics): properties on tiny inputs, equality with scikit-image and closed forms, offline weights errors, report and folder I/O. No downloads."
import json, time, urllib.error
from pathlib import Path
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from mri_diffusion_nb.data import DataError, SliceData
from mri_diffusion_nb import runtime as W, features as FE, frechet as FR, paired as PA, memorization as ME, adherence as AD, report as M
from mri_diffusion_nb.files import FileError
from mri_diffusion_nb.generate import MANIFEST_REQUIRED


def blobs(n=48, res=32, seed=0):
    "Smooth bright ellipses on a -1 background; label = size bin (2 classes)."
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, res), torch.linspace(-1, 1, res), indexing='ij')
    imgs, labels = [], []
    for i in range(n):
        r = 0.3 + 0.4*torch.rand(1, generator=g).item()
        cx, cy = (torch.rand(2, generator=g)*0.3 - 0.15).tolist()
        inside = ((xx - cx)/r)**2 + ((yy - cy)/(0.8*r))**2
        tex = 0.3*torch.sin(6*xx + i) * torch.cos(5*yy)
        img = torch.where(inside < 1, 0.4 + tex, torch.full_like(xx, -1.))
        imgs.append(img); labels.append(int(r > 0.5))
    x = F.avg_pool2d(torch.stack(imgs)[:, None], 3, stride=1, padding=1, count_include_pad=False).clamp(-1, 1)
    return x, torch.tensor(labels)


@pytest.fixture(scope='module')
def data():
    x, y = blobs(60, 32)
    split = ['val' if i % 5 == 2 else 'train' for i in range(len(x))]
    return SliceData(x, y, ['s']*len(x), ['small', 'large'], split, dict(source='blobs', res=32))


def noisy(x, s, seed=1):
    return (x + s*torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))).clamp(-1, 1)


# --- FID / KID -------------------------------------------------------------

def test_identical_sets_fid_kid_zero(data):
    f = FE.extract_features(data.images, FE.StandinFeatures())
    r = FR.fid_kid(f, f)
    assert abs(r['fid']) < 1e-6
    assert abs(r['kid_mean']) < 1e-3
    assert np.isfinite(r['kid_std'])


def test_noise_raises_distances_monotonically(data):
    net = FE.StandinFeatures()
    ref = FE.extract_features(data.images, net)
    rows = [FR.fid_kid(ref, FE.extract_features(noisy(data.images, s), net)) for s in (0, .1, .2, .4, .8)]
    fids, kids = [r['fid'] for r in rows], [r['kid_mean'] for r in rows]
    assert fids == sorted(fids) and fids[-1] > fids[1] > 0
    assert kids == sorted(kids)


def test_frechet_closed_form_diagonal():
    g = torch.Generator().manual_seed(0)
    mu1, mu2 = torch.randn(6, generator=g, dtype=torch.float64), torch.randn(6, generator=g, dtype=torch.float64)
    v1, v2 = torch.rand(6, generator=g, dtype=torch.float64) + .1, torch.rand(6, generator=g, dtype=torch.float64) + .1
    closed = float((mu1 - mu2).square().sum() + (v1.sqrt() - v2.sqrt()).square().sum())
    assert FR.frechet_distance(mu1, torch.diag(v1), mu2, torch.diag(v2)) == pytest.approx(closed, abs=1e-10)
    # same Gaussian: zero
    assert FR.frechet_distance(mu1, torch.diag(v1), mu1, torch.diag(v1)) == pytest.approx(0, abs=1e-10)


def test_frechet_equals_torchmetrics_and_fid_kid():
    from torchmetrics.image.fid import _compute_fid
    g = torch.Generator().manual_seed(1)
    a = torch.randn(50, 7, generator=g, dtype=torch.float64)
    b = torch.randn(40, 7, generator=g, dtype=torch.float64) @ torch.randn(7, 7, generator=g, dtype=torch.float64)*.5 + .2
    ours = FR.frechet_distance(*FR.gaussian_stats(a), *FR.gaussian_stats(b))
    assert ours == pytest.approx(float(_compute_fid(*FR.gaussian_stats(a), *FR.gaussian_stats(b))), rel=1e-8)
    assert FR.fid_kid(a, b)['fid'] == pytest.approx(ours, rel=1e-6)


def test_kid_reproducible_and_subset_size(data):
    f = FE.extract_features(data.images, FE.StandinFeatures())
    g = FE.extract_features(noisy(data.images, .3), FE.StandinFeatures())
    r1, r2 = FR.fid_kid(f, g[:20], seed=3), FR.fid_kid(f, g[:20], seed=3)
    assert r1 == r2 and r1['kid_subset_size'] == 20


def test_feature_cache_dir(tmp_path, data):
    net = FE.StandinFeatures()
    a = FE.extract_features(data.images, net, cache=False, cache_dir=tmp_path)
    assert len(list(tmp_path.glob('features-*.safetensors'))) == 1
    b = FE.extract_features(data.images, net, cache=False, cache_dir=tmp_path)
    assert torch.equal(a, b)


# --- paired metrics --------------------------------------------------------

@pytest.mark.parametrize('res', [32, 64])
def test_ssim_psnr_equal_skimage(res):
    from skimage.metrics import structural_similarity, peak_signal_noise_ratio
    x, _ = blobs(4, res)
    y = noisy(x, .1)
    sk_s = [structural_similarity(b[0].numpy(), a[0].numpy(), data_range=2, gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False) for a, b in zip(x, y)]
    sk_p = [peak_signal_noise_ratio(a[0].numpy(), b[0].numpy(), data_range=2) for a, b in zip(x, y)]
    assert torch.allclose(PA.ssim(y, x).double(), torch.tensor(sk_s), atol=1e-4)
    assert torch.allclose(PA.psnr(y, x).double(), torch.tensor(sk_p), atol=1e-3)


def test_identical_images_ssim_one_psnr_capped():
    x, _ = blobs(3, 32)
    assert torch.allclose(PA.ssim(x, x), torch.ones(3), atol=1e-5)
    assert torch.allclose(PA.ms_ssim(x, x), torch.ones(3), atol=1e-5)
    p = PA.psnr(x, x)
    assert torch.isfinite(p).all() and (p == 100.).all()
    assert (PA.psnr(x, x, max_db=60.) == 60.).all()
    r = PA.reconstruction_metrics(x, x)
    assert r['identical'] == 3 and r['psnr_db'] == 100. and np.isfinite(r['psnr_db'])
    r2 = PA.reconstruction_metrics(x, noisy(x, .2))
    assert r2['identical'] == 0 and r2['ssim'] < 1 and r2['psnr_db'] < 100


@pytest.mark.parametrize('res,scales', [(32, 3), (64, 4), (128, 5)])
def test_ms_ssim_small_images(res, scales):
    assert PA.ms_ssim_scales(res) == scales
    x, _ = blobs(2, res)
    v = PA.ms_ssim(noisy(x, .1), x)
    assert v.shape == (2,) and ((v > 0) & (v < 1)).all()


def test_diversity_collapse_is_one():
    x, _ = blobs(8, 32)
    v, k = ME.pairwise_ms_ssim(x[:1].expand(6, -1, -1, -1))
    assert v == pytest.approx(1, abs=1e-5) and k == 15
    d = ME.diversity(x, torch.tensor([0]*4 + [1]*4), ['a', 'b'])
    assert set(d) == {'a', 'b'} and d['a']['pairs'] == 6 and d['a']['ms_ssim'] < 1


# --- weights: offline errors -------------------------------------------------

def _one_line(e): return len(str(e).splitlines()) == 1


def test_inception_missing_weights_env(monkeypatch):
    monkeypatch.setenv(W.INCEPTION_ENV, '/nonexistent/dir/inception.pth')
    t = time.time()
    with pytest.raises(W.WeightsError) as ei: FE.feature_extractor('inception')
    assert time.time() - t < 5
    msg = str(ei.value)
    assert _one_line(ei.value) and W.INCEPTION_FILE in msg and W.INCEPTION_ENV in msg and '/nonexistent/dir/inception.pth' in msg
    assert isinstance(ei.value, DataError)


def test_inception_no_network_fails_fast(monkeypatch, tmp_path):
    monkeypatch.delenv(W.INCEPTION_ENV, raising=False)
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    def no_net(*a, **k): raise urllib.error.URLError('no network')
    monkeypatch.setattr(torch.hub, 'download_url_to_file', no_net)
    with pytest.raises(W.WeightsError) as ei: FE.GrayInception()
    msg = str(ei.value)
    assert _one_line(ei.value) and W.INCEPTION_FILE in msg and 'download failed' in msg and str(tmp_path) in msg
    with pytest.raises(W.WeightsError, match='download disabled'): FE.GrayInception(download=False)
    assert not list(tmp_path.rglob('*.pth'))  # nothing half-written


def test_inception_garbled_weights(tmp_path):
    p = tmp_path/W.INCEPTION_FILE; p.write_bytes(b'not a checkpoint')
    with pytest.raises(W.WeightsError, match='not a readable') as ei: FE.GrayInception(weights=p)
    assert _one_line(ei.value)


def test_lpips_missing_backbone(monkeypatch):
    monkeypatch.setenv(W.LPIPS_ENV, '/nonexistent/alexnet.pth')
    for net in ('alex', 'vgg'):
        with pytest.raises(W.WeightsError) as ei: PA.lpips_model(net)
        assert _one_line(ei.value) and W.LPIPS_BACKBONES[net] in str(ei.value) and W.LPIPS_ENV in str(ei.value)


def test_lpips_local_backbone(monkeypatch, tmp_path):
    import torchvision
    p = tmp_path/W.LPIPS_BACKBONES['alex']
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), p)
    monkeypatch.setenv(W.LPIPS_ENV, str(p))
    m = PA.lpips_model('alex')
    x, _ = blobs(3, 64)
    d0, d1 = PA.lpips_distance(x, x, m), PA.lpips_distance(noisy(x, .3), x, m)
    assert torch.allclose(d0, torch.zeros(3), atol=1e-6) and (d1 > 0).all()
    vgg_file = tmp_path/'wrong.pth'; torch.save({'x': torch.zeros(1)}, vgg_file)
    with pytest.raises(W.WeightsError, match='not a torchvision'): PA.lpips_model('alex', weights=vgg_file)


# --- memorization, classifier --------------------------------------------

def test_nearest_neighbours_finds_shifted_copies(data):
    tr = data.train.images
    copies = ME._shift(tr[:10], 1, -1)
    i0, c0, _ = ME.nearest_neighbours(copies, tr, max_shift=0)
    i1, c1, s1 = ME.nearest_neighbours(copies, tr, max_shift=1)
    assert torch.equal(i1, torch.arange(10)) and (c1 >= c0 - 1e-6).all() and (c1 > 0.999).all()
    assert (s1 == torch.tensor([-1, 1])).all()
    a = ME.memorization_audit(copies, tr, data.val.images)
    assert a['summary']['closer_share'] == 1.0 and 'definition' in a['summary']


def test_classifier_train_save_load(tmp_path, data):
    clf = AD.train_classifier(data, steps=60, batch_size=16, progress=False)
    assert clf.info['val_accuracy'] >= 0.75
    ca = AD.class_adherence(clf, data.val.images, data.val.labels)
    assert sum(map(sum, ca['confusion'])) == len(data.val) and set(ca['per_class']) == {'small', 'large'}
    back = AD.load_classifier(AD.save_classifier(clf, tmp_path/'c.safetensors'))
    assert torch.equal(back.predict(data.images), clf.predict(data.images)) and back.info == clf.info
    (tmp_path/'bad.safetensors').write_bytes(b'junk')
    with pytest.raises(DataError, match='not a safetensors'): AD.load_classifier(tmp_path/'bad.safetensors')


# --- report ----------------------------------------------------------------

def test_evaluate_and_write_report(tmp_path, data):
    clf = AD.train_classifier(data, steps=20, progress=False)
    fake = noisy(data.val.images, .1)
    rep = M.evaluate(data, fake, data.val.labels, feature='standin', classifier=clf, progress=False, group={'guidance': 3.0})
    for key in ('fid', 'kid', 'floor', 'memorization', 'diversity', 'class_adherence'):
        assert 'protocol' in rep[key], key
    assert 'STAND-IN' in rep['fid']['protocol'] and rep['fid']['n_fake'] == len(fake)
    out = M.write_report(rep, tmp_path/'rep')
    names = sorted(p.name for p in out.iterdir())
    assert names == ['confusion.png', 'nearest_pairs.png', 'report.json', 'report.md', 'samples.png']
    j = json.loads((out/'report.json').read_text())
    assert j['format'] == M.REPORT_FORMAT and j['fid']['value'] == pytest.approx(rep['fid']['value']) and '_figures' not in j
    assert 'STAND-IN' in (out/'report.md').read_text()
    reps = [M.evaluate(data, noisy(data.val.images, s), data.val.labels, feature='standin', group={'guidance': w},
                       figures=False, progress=False) for w, s in ((1., .0), (3., .2))]
    out2 = M.write_report(reps, tmp_path/'sweep')
    assert sorted(p.name for p in out2.iterdir()) == ['report.json', 'report.md', 'sweep.png']
    assert len(json.loads((out2/'report.json').read_text())) == 2


def test_evaluate_resizes_and_checks(data):
    big = F.interpolate(data.val.images, size=(64, 64), mode='bilinear')
    rep = M.evaluate(data, big, None, feature='standin', figures=False, progress=False)
    assert rep['protocol']['fake']['resized_from'] == [64, 64] and 'diversity' not in rep
    with pytest.raises(ValueError, match='labels'): M.evaluate(data, data.val.images, data.val.labels[:3], feature='standin', figures=False, progress=False)


# --- generated folders ------------------------------------------------------

def write_dir(d, images, labels, bits=8, cls=None):
    d.mkdir(parents=True, exist_ok=True)
    rows = ['file,class,seed,guidance,sampler,steps,model']
    for i, (x, c) in enumerate(zip(images, labels)):
        top, dt = (255, np.uint8) if bits == 8 else (65535, np.uint16)
        Image.fromarray(((x[0].numpy() + 1)/2*top).round().astype(dt)).save(d/f'{i}.png')
        rows.append(f"{i}.png,{cls[int(c)] if cls else int(c)},{i},{1.0 + i % 2},ddim,50,demo")
    (d/'manifest.csv').write_text('\n'.join(rows) + '\n')
    return d


@pytest.mark.parametrize('bits', [8, 16])
def test_load_fake_dir_roundtrip(tmp_path, data, bits):
    x, y = data.val.images, data.val.labels
    fs = M.load_fake_dir(write_dir(tmp_path/'f', x, y, bits), progress=False)
    assert torch.allclose(fs.images, x, atol=1/(2**bits - 1) + 1e-6) and torch.equal(fs.labels, y)
    assert fs.rows[1]['guidance'] == 2.0 and fs.rows[0]['steps'] == 50 and fs.rows[0]['sampler'] == 'ddim'
    named = M.load_fake_dir(write_dir(tmp_path/'n', x, y, bits, cls=data.class_names), class_names=data.class_names, progress=False)
    assert torch.equal(named.labels, y)
    groups = M.evaluate_groups(data, fs, by='guidance', feature='standin', figures=False, progress=False)
    assert [r['group']['guidance'] for r in groups] == [1.0, 2.0]


def test_load_fake_dir_errors(tmp_path, data):
    def err(folder, contains, **kw):
        with pytest.raises(DataError) as ei: M.load_fake_dir(folder, progress=False, **kw)
        assert contains in str(ei.value) and len(str(ei.value).splitlines()) == 1, str(ei.value)
    err(tmp_path/'missing', 'folder not found')
    (tmp_path/'file.txt').write_text('x'); err(tmp_path/'file.txt', 'not a folder')
    (tmp_path/'empty').mkdir(); err(tmp_path/'empty', 'manifest.csv not found')
    d = tmp_path/'cols'; d.mkdir(); (d/'manifest.csv').write_text('file,class\na.png,0\n'); err(d, 'missing columns seed,guidance,sampler,steps,model')
    d = tmp_path/'norows'; d.mkdir(); (d/'manifest.csv').write_text(','.join(MANIFEST_REQUIRED) + '\n'); err(d, 'no rows')
    d = write_dir(tmp_path/'gone', data.val.images[:2], data.val.labels[:2]); (d/'1.png').unlink(); err(d, 'image file not found')
    d = write_dir(tmp_path/'garbled', data.val.images[:2], data.val.labels[:2]); (d/'1.png').write_bytes(b'\x89PNG garbage'); err(d, 'not a readable image')
    d = write_dir(tmp_path/'rgb', data.val.images[:2], data.val.labels[:2]); Image.new('RGB', (32, 32)).save(d/'1.png'); err(d, 'expected a grayscale PNG')
    d = write_dir(tmp_path/'size', data.val.images[:2], data.val.labels[:2]); Image.new('L', (16, 16)).save(d/'1.png'); err(d, 'differs from the first image')
    d = write_dir(tmp_path/'names', data.val.images[:2], data.val.labels[:2], cls=['small', 'large']); err(d, "class 'small' is not an index")
    err(d, "class 'small' is not an index or one of", class_names=['a', 'b'])
    d = write_dir(tmp_path/'escape', data.val.images[:1], data.val.labels[:1])
    (d/'manifest.csv').write_text(','.join(MANIFEST_REQUIRED) + '\n../x.png,0,,,,,\n'); err(d, 'relative path inside the folder')


# --- scale: chunked, lazy, on a device (issue 13) -------------------------------

class Lazy:
    "A lazy image store as `store.open_data` gives: `images[i:i+k]` and index tensors read on demand, counted."
    def __init__(self, x): self.x, self.reads = x, []
    def __len__(self): return len(self.x)
    @property
    def shape(self): return self.x.shape
    def __getitem__(self, k):
        out = self.x[k]; self.reads.append(len(out)); return out.clone()

class LazyData:
    "A `SliceData` whose images are lazy (train/val are views)."
    def __init__(self, d): self.d, self.images = d, Lazy(d.images)
    def __getattr__(self, k): return getattr(self.d, k)
    def __len__(self): return len(self.d)
    @property
    def train(self): return LazyData(self.d.train)
    @property
    def val(self): return LazyData(self.d.val)


def test_chunked_search_equals_brute_force_topk(data):
    q, r = noisy(data.val.images, .2), data.train.images
    sh = ME._shifts(1).tolist()
    brute = torch.stack([ME._unit(ME._shift(q, dy, dx)).double() @ ME._unit(r).double().T for dy, dx in sh]).amax(0)
    bv, bi = brute.topk(4, dim=1)
    lazy = Lazy(r)
    i, c, s = ME.nearest_neighbours(q, lazy, max_shift=1, k=4, batch_size=3, chunk=5)
    assert torch.equal(i, bi) and torch.allclose(c.double(), bv, atol=1e-5) and s.shape == (len(q), 4, 2)
    assert max(lazy.reads) <= 1024  # the reference was read in chunks


def test_audit_downsamples_and_reuses_reference(data):
    ref = ME.audit_reference(data.train.images, data.val.images, max_shift=1, res=16)
    assert ref['train'].shape == (len(data.train), 16*16) and ref['train'].dtype == torch.float32
    copies = ME._shift(data.train.images[:6], 2, 0)  # 2 px at 32 = 1 px at 16: within max_shift after downsampling
    a = ME.memorization_audit(copies, reference=ref)
    assert torch.equal(a['train_idx'], torch.arange(6)) and a['summary']['closer_share'] == 1.0 and a['summary']['res'] == 16
    assert '16 px' in a['summary']['definition']
    b = ME.memorization_audit(copies, data.train.images, data.val.images, res=16)
    assert torch.equal(a['train_corr'], b['train_corr'])


def test_sample_pairs_without_enumeration():
    t = time.time()
    i, j = ME.sample_pairs(10**7, 300, seed=3)  # all pairs would be 5e13 indices
    assert time.time() - t < 5 and len(i) == 300 and (i != j).all() and int(torch.maximum(i, j).max()) < 10**7
    assert torch.equal(ME.sample_pairs(10**7, 300, seed=3)[0], i)
    assert len(ME.sample_pairs(5, 300)[0]) == 10 and len(ME.sample_pairs(1)[0]) == 0


def test_lazy_real_gives_the_same_report(data):
    lazy = LazyData(data)
    fake, y = noisy(data.val.images, .1), data.val.labels
    kw = dict(feature='standin', figures=False, progress=False, device='cpu')
    a, b = M.evaluate(data, fake, y, **kw), M.evaluate(lazy, fake, y, **kw)
    for k in ('fid', 'kid', 'floor'):
        flat = lambda d: {f'{n}{i}': v for n, x in d.items() for i, v in (enumerate(x) if isinstance(x, tuple) else [('', x)])}
        assert flat(a[k]) == pytest.approx(flat(b[k])), k
    assert a['memorization'] == b['memorization'] and a['diversity'] == b['diversity']
    assert FE.images_key(lazy.images) == FE.images_key(data.images)
    assert a['protocol']['device'] == 'cpu'


def test_groups_share_one_real_reference(data, monkeypatch):
    calls = []
    orig = ME.audit_reference
    monkeypatch.setattr(M, 'audit_reference', lambda *a, **k: calls.append(1) or orig(*a, **k))
    x, y = data.val.images, data.val.labels
    fs = M.FakeSet(torch.cat([x, noisy(x, .3)]), torch.cat([y, y]), [{'guidance': g} for g in [1.0]*len(x) + [7.0]*len(x)])
    reps = M.evaluate_groups(data, fs, by='guidance', feature='standin', figures=False, progress=False)
    assert len(calls) == 1 and [r['group']['guidance'] for r in reps] == [1.0, 7.0]
    assert reps[1]['fid']['value'] > reps[0]['fid']['value']


def test_offline_inception_marks_fid_unavailable(data):
    kw = dict(feature='inception', weights='/nowhere/w.pth', download=False, figures=False, progress=False)
    rep = M.evaluate(data, noisy(data.val.images, .1), data.val.labels, **kw)
    assert rep['fid']['value'] is None and rep['kid']['mean'] is None and '/nowhere/w.pth' in rep['fid']['reason']
    assert rep['standin']['fid']['value'] > 0 and 'floor' in rep['standin'] and rep['memorization']['closer_share'] is not None
    assert rep['protocol']['feature']['network'] == 'unavailable'
    md = M.report_markdown(rep)
    assert 'stand-in FID' in md and 'unavailable' in md
    M.plot_sweep([dict(rep, group={'guidance': 1.0})])
    with pytest.raises(W.WeightsError): M.evaluate(data, data.val.images, None, strict=True, **kw)
    with pytest.raises(ValueError, match='too small'): M.evaluate(data, torch.zeros(3, 1, 4, 4), None, feature='standin', figures=False, progress=False)


def test_write_report_is_a_set(tmp_path, data):
    rep = M.evaluate(data, noisy(data.val.images, .1), data.val.labels, feature='standin', progress=False)
    out = M.write_report(rep, tmp_path/'rep')
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(AttributeError): M.write_report(dict(rep, _figures={'samples': None}), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before and sorted(p.name for p in tmp_path.iterdir()) == ['rep']
    (tmp_path/'other').mkdir(); (tmp_path/'other'/'a.png').write_bytes(b'x')
    with pytest.raises(FileError, match='not an evaluation report'): M.write_report(rep, tmp_path/'other')
    (tmp_path/'.tmp-rep-123-abcdef').mkdir(); (tmp_path/'.tmp-rep-9-abcdef').mkdir(); (tmp_path/'.tmp-rep2-1-abcdef').mkdir()
    assert len(M.clean_report_temps(out)) == 2 and (tmp_path/'.tmp-rep2-1-abcdef').exists()


def test_plot_sweep_diversity_panel_and_stand_in_titles(data):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    x = data.val.images
    sweep = [M.evaluate(data, noisy(x, s), data.val.labels, feature='standin', group={'guidance': w}, figures=False, progress=False)
             for w, s in ((1.0, .05), (3.0, .2))]
    fig = M.plot_sweep(sweep, x='guidance')
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ['stand-in FID', 'stand-in KID', 'class adherence', 'diversity (MS-SSIM)', 'memorization share'], titles
    div = fig.axes[3]
    assert np.allclose(div.lines[0].get_ydata(), [np.mean([v['fake'] for v in r['diversity']['per_class'].values()]) for r in sweep])
    assert np.isclose(div.lines[1].get_ydata()[0], np.mean([v['real'] for v in sweep[0]['diversity']['per_class'].values()]))  # the real value, dashed
    plt.close(fig)
    md = M.report_markdown(sweep)
    assert '| guidance | stand-in FID | stand-in KID |' in md and 'diversity |' in md
