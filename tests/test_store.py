"""Issue 12 from the outside: the slice store written by `mri-diffusion data` for BraTS-like and IXI-like folders, geometry in mm, resume after kill -9."""
import json, os, pickle, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import nibabel as nib
import pytest
import torch
from conftest import cli, write_ixi, write_brats
from mri_diffusion_nb.data import Volume, to_grid, load_volume, mni152_slices, DataError
from mri_diffusion_nb.store import open_data, read_index, SliceDataset, StoreData


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    "Every test builds the built-in template into its own cache folder: no state shared between tests."
    monkeypatch.setenv('MRI_DIFFUSION_CACHE', str(tmp_path/'cache'))

def _ball(zooms, r_mm=30., size_mm=110.):
    n = [int(size_mm/z) for z in zooms]
    g = np.meshgrid(*[(np.arange(k) - (k - 1)/2)*z for k, z in zip(n, zooms)], indexing='ij')
    return Volume((sum(c**2 for c in g) <= r_mm**2).astype(np.float32)*100, np.diag([*zooms, 1.]), tuple(zooms), 'ball')

def test_ball_is_round_with_the_right_diameter():
    # radius 30 mm at 1.2 x 0.94 x 0.94 mm; 64 px over 96 mm is 1.5 mm/pixel, so the diameter is 40 px in every direction
    norm, fg, _, _ = to_grid(_ball((1.2, 0.94, 0.94)), res=64, fov_mm=96., slice_mm=1.5)
    k = int(np.argmax(fg.sum((0, 1))))                       # the equatorial axial slice
    sl = norm[:, :, k] > 0
    wx, wy = sl.any(1).sum(), sl.any(0).sum()
    assert abs(wx - 40) <= 1 and abs(wy - 40) <= 1, (wx, wy)
    assert abs(fg.any((0, 1)).sum() - 40) <= 1                 # through-plane too
    assert abs(sl.sum()*1.5**2 - np.pi*30**2)/(np.pi*30**2) < 0.05  # area of a 30 mm disc

def test_cli_mni152_store_equals_in_memory(tmp_path):
    out = tmp_path/'mni'
    r = cli('data', '--source', 'mni152', '--res', 32, '--out', out)
    assert r.returncode == 0, r.stderr
    assert f'wrote {out}' in r.stdout and '7.5 mm/pixel' in r.stdout
    d, ref = open_data(out), mni152_slices(res=32)
    assert isinstance(d, StoreData) and d.images.shape == ref.images.shape
    assert (d.images[:] - ref.images).abs().max() <= 1/255 + 1e-6
    assert torch.equal(d.labels, ref.labels) and d.split == ref.split and d.counts() == ref.counts()
    assert d.settings['pixel_mm'] == 7.5 and d.settings['fov_mm'] == 240 and d.settings['slice_mm'] == 1
    assert np.load(next((out/'shards').glob('*.npy')), mmap_mode='r', allow_pickle=False).dtype == np.uint8

def test_open_mni152_builds_once(tmp_path):
    a = open_data('mni152', res=32)
    stamp = (a.folder/'index.json').stat().st_mtime_ns
    b = open_data('mni152', res=32)
    assert b.folder == a.folder and (b.folder/'index.json').stat().st_mtime_ns == stamp
    assert a.folder.is_relative_to(tmp_path/'cache')

def test_brats_t1_tumour_classes_match_seg_maps(tmp_path, mni_small):
    balls = write_brats(tmp_path/'brats', mni_small, n=4, radius=4)
    out = tmp_path/'store'
    r = cli('data', '--source', tmp_path/'brats', '--modality', 't1', '--res', 32, '--tumour-mm2', 100, '--val-frac', 0.5, '--out', out)
    assert r.returncode == 0, r.stderr
    d, ix = open_data(out), read_index(out)
    assert d.class_names == ['no tumour', 'tumour']
    assert sorted(Path(v['image']).name for v in ix['volumes']) == [f'BraTS_{i:03d}_t1.nii.gz' for i in range(4)]  # never a seg file
    R = 4*3.                                                    # ball radius in mm; a slice at height h cuts pi (R^2 - h^2) mm^2
    expected = 2*np.sqrt(R**2 - 100/np.pi)                       # mm of height (1 mm slices) where that is >= 100 mm^2
    for s, c in balls.items():
        lab = d.labels[[i for i, x in enumerate(d.subjects) if x == s]].numpy()
        if c is None: assert lab.sum() == 0
        else:
            assert abs(lab.sum() - expected) <= 3, (s, lab.sum(), expected)
            on = np.flatnonzero(lab); assert on.max() - on.min() + 1 == len(on)   # one contiguous run of slices
    assert set(d.train.subjects).isdisjoint(d.val.subjects)
    assert 'tumour' in r.stdout and 'no tumour' in r.stdout

def test_ixi_csv_age_groups(tmp_path, mni_small):
    csv = write_ixi(tmp_path/'ixi', mni_small, n=6)
    out = tmp_path/'store'
    r = cli('data', '--source', tmp_path/'ixi', '--labels', csv, '--label-column', 'AGE', '--bins', '40,60', '--res', 32, '--val-frac', 0.34, '--out', out)
    assert r.returncode == 0, r.stderr
    d = open_data(out)
    assert d.class_names == ['AGE <40', 'AGE 40-60', 'AGE >=60']
    want = {f'IXI{i:03d}-Guys-{1000 + i}-T1': g for i, g in enumerate([0, 0, 1, 1, 2, 2])}
    assert {s: set(d.labels[[i for i, x in enumerate(d.subjects) if x == s]].tolist()) for s in want} == {s: {g} for s, g in want.items()}
    assert set(d.train.subjects).isdisjoint(d.val.subjects) and d.val.subjects
    # the same head size in every subject: anisotropic voxels, other fields of view, LAS and oblique give brains of equal extent
    widths = [int((d.images[[i for i, x in enumerate(d.subjects) if x == s]] > -0.9).any(0).any(-2).sum()) for s in want]
    assert max(widths) - min(widths) <= 2, widths

def test_seg_shape_mismatch_one_line_then_skip(tmp_path, mni_small):
    write_brats(tmp_path/'b', mni_small, n=3)
    bad = tmp_path/'b'/'BraTS_001'/'BraTS_001_seg.nii.gz'
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.int16), np.eye(4)), bad)
    out = tmp_path/'store'
    r = cli('data', '--source', tmp_path/'b', '--modality', 't1', '--res', 32, '--out', out)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and str(bad) in r.stderr and 'does not match' in r.stderr
    assert not out.exists()
    r = cli('data', '--source', tmp_path/'b', '--modality', 't1', '--res', 32, '--on-error', 'skip', '--out', out)
    assert r.returncode == 0, r.stderr
    assert f'skipped {bad}' in r.stdout
    assert sorted(set(open_data(out).subjects)) == ['BraTS_000', 'BraTS_002']

def test_several_contrasts_need_a_modality(tmp_path, mni_small):
    write_brats(tmp_path/'b', mni_small, n=2)
    r = cli('data', '--source', tmp_path/'b', '--res', 32, '--out', tmp_path/'s')
    assert r.returncode == 2 and 'has 4 volumes' in r.stderr and '--modality' in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli('data', '--source', tmp_path/'b', '--pattern', '**/*_flair.nii.gz', '--exclude', 'BraTS_001*', '--res', 32, '--out', tmp_path/'s')
    assert r.returncode == 0, r.stderr
    assert [Path(v['image']).name for v in read_index(tmp_path/'s')['volumes']] == ['BraTS_000_flair.nii.gz']

@pytest.mark.parametrize('bad', [['--res', '2000'], ['--fov-mm', '5'], ['--bins', '40,x'], ['--workers', '0']])
def test_bad_options_one_line(tmp_path, bad):
    r = cli('data', '--source', 'mni152', *bad, '--out', tmp_path/'s')
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and not (tmp_path/'s').exists()

@pytest.mark.slow
def test_kill_9_then_resume_equals_uninterrupted(tmp_path, mni_small):
    "A real kill -9 of the CLI and its 2 worker processes (chapter 11 kills a one-process build in the default tier)."
    write_brats(tmp_path/'b', mni_small, n=6)
    args = ['data', '--source', tmp_path/'b', '--modality', 't1', '--res', 32, '--slice-mm', 3]
    assert cli(*args, '--out', tmp_path/'whole').returncode == 0   # serial, in this process
    exe = Path(sys.executable).parent/'mri-diffusion'
    p = subprocess.Popen([str(exe), *map(str, args), '--workers', '2', '--out', str(tmp_path/'killed')],  # 2 worker processes
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    shards = tmp_path/'killed'/'shards'
    while p.poll() is None and not list(shards.glob('*.json')): time.sleep(0.01)
    os.killpg(p.pid, signal.SIGKILL); p.wait()                 # the CLI and its workers, at once
    assert not (tmp_path/'killed'/'index.json').exists()       # it really was interrupted
    done = len(list(shards.glob('*.json')))
    r = cli(*args, '--out', tmp_path/'killed')
    assert r.returncode == 0, r.stderr
    a, b = read_index(tmp_path/'whole'), read_index(tmp_path/'killed')
    assert a['volumes'] == b['volumes'] and 0 < done < 6
    for v in a['volumes']:
        assert (tmp_path/'whole'/'shards'/f"{v['key']}.npy").read_bytes() == (tmp_path/'killed'/'shards'/f"{v['key']}.npy").read_bytes()
    assert not [p for p in (tmp_path/'killed').rglob('.tmp-*')]

def test_slice_dataset_workers_and_views(tmp_path):
    d = open_data('mni152', res=32)
    tr = d.train
    assert len(tr) + len(d.val) == len(d) and set(tr.split) == {'train'}
    ds = SliceDataset(tr)
    x, y = ds[3]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and y == int(tr.labels[3])
    assert torch.equal(x, d.images[np.flatnonzero(np.array(d.split) == 'train')[3]])
    dl = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2, shuffle=False)
    xb, yb = next(iter(dl))
    assert torch.equal(xb, tr.images[:8]) and torch.equal(yb, tr.labels[:8])
    back = pickle.loads(pickle.dumps(ds))
    assert torch.equal(back[5][0], ds[5][0])
    with pytest.raises(IndexError): d.images[len(d)]

def test_loader_variants(tmp_path, mni_small):
    ref = nib.Nifti1Image(mni_small, np.diag([3., 3, 3, 1]))
    v = {'n2.nii.gz': nib.Nifti2Image(mni_small, ref.affine), 'be.nii': nib.Nifti1Image(mni_small.astype('>f4'), ref.affine),
         'pair.hdr': nib.Nifti1Pair(mni_small, ref.affine), 's4.nii.gz': nib.Nifti1Image(mni_small[..., None], ref.affine)}
    for name, img in v.items():
        nib.save(img, tmp_path/name)
        got = load_volume(tmp_path/name)
        np.testing.assert_allclose(got.data, mni_small, rtol=1e-6); np.testing.assert_allclose(got.affine, ref.affine)
    q = nib.Nifti1Image(mni_small, None); q.set_qform(ref.affine, 1); q.set_sform(None, 0); nib.save(q, tmp_path/'q.nii')
    s = nib.Nifti1Image(mni_small, None); s.set_sform(ref.affine, 1); s.set_qform(None, 0); nib.save(s, tmp_path/'s.nii')
    for f in ('q.nii', 's.nii'): np.testing.assert_allclose(load_volume(tmp_path/f).affine, ref.affine)
    (tmp_path/'pair.img').write_bytes((tmp_path/'pair.img').read_bytes()[:1000])   # truncated data file of a pair
    from mri_diffusion_nb.data import DataError
    with pytest.raises(DataError, match='truncated or corrupt'): load_volume(tmp_path/'pair.hdr')

# --- issue 18, the data side: damaged stores, special files, full disks, unreadable folders ---

def test_damaged_store_one_line(tmp_path):
    out = tmp_path/'s'
    assert cli('data', '--source', 'mni152', '--res', 32, '--out', out).returncode == 0
    ix = json.loads((out/'index.json').read_text())
    shard = out/'shards'/f"{ix['volumes'][0]['key']}.npy"
    good = shard.read_bytes()
    for bad, words in [(dict(ix, volumes=[{'key': 'x'}]), 'damaged store index'), ({k: v for k, v in ix.items() if k != 'storage'}, 'storage'),
                       ([1, 2], 'not a store index')]:
        (out/'index.json').write_text(json.dumps(bad))
        with pytest.raises(DataError, match=words): open_data(out)
    v0 = ix['volumes'][0]
    (out/'index.json').write_text(json.dumps(dict(ix, volumes=[dict(v0, key='../../outside')] + ix['volumes'][1:])))
    with pytest.raises(DataError, match='not a plain file name'): open_data(out)      # issue 29, kind 9: paths stay inside
    (out/'index.json').write_text(json.dumps(ix))
    np.save(shard, np.load(shard).astype(np.uint16))                # kind 6: codes of another dtype are not decoded as uint8
    with pytest.raises(DataError, match='holds uint16 codes, the index says uint8'): open_data(out).images[0]
    shard.write_bytes(good[:len(good)//2])                          # truncated shard: named when read
    with pytest.raises(DataError, match='unreadable shard') as e: open_data(out).images[0]
    assert str(shard) in str(e.value)
    shard.unlink()
    r = cli('train', '--preset', 'tiny', '--data', out, '--steps', 1, '--out', tmp_path/'run')
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and 'shard missing' in r.stderr and str(shard) in r.stderr
    assert cli('data', '--source', 'mni152', '--res', 32, '--out', out).returncode == 0   # the same command repairs it
    assert shard.read_bytes() == good and len(open_data(out)) > 0

@pytest.mark.parametrize('target', ['/dev/null', 'symlink', 'file_parent'])
@pytest.mark.parametrize('kind', ['store', 'cache'])
def test_special_outputs_refused(tmp_path, target, kind):
    (tmp_path/'f').write_text('x'); (tmp_path/'real').mkdir()
    if target == 'symlink': (tmp_path/'ln.safetensors').symlink_to(tmp_path/'real'/'c.safetensors'); out = tmp_path/'ln.safetensors'
    elif target == 'file_parent': out = tmp_path/'f'/('c.safetensors' if kind == 'cache' else 's')
    elif kind == 'store': out = Path('/dev/null')
    else: out = tmp_path/'fifo.safetensors'; os.mkfifo(out)       # a special file with the cache's suffix
    if target == 'symlink' and kind == 'store': out = tmp_path/'ln'; out.symlink_to(tmp_path/'f')
    r = cli('data', '--source', 'mni152', '--res', 32, '--out', out)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and 'Traceback' not in r.stderr, r.stderr
    assert Path('/dev/null').is_char_device() and (tmp_path/'f').read_text() == 'x' and not list((tmp_path/'real').iterdir())
    assert kind == 'store' or target != '/dev/null' or Path(out).is_fifo()

@pytest.mark.parametrize('kind', ['store', 'cache'])
def test_full_disk_one_line_then_rerun(tmp_path, kind, monkeypatch):
    import errno, mri_diffusion_nb.data as D
    def full(*a, **k): raise OSError(errno.ENOSPC, 'No space left on device')
    out = tmp_path/('c.safetensors' if kind == 'cache' else 's')
    with monkeypatch.context() as m:
        if kind == 'cache': m.setattr(D, 'save_file', full)
        else: m.setattr(np, 'save', full)
        r = cli('data', '--source', 'mni152', '--res', 32, '--out', out)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and 'no space left on device' in r.stderr, r.stderr
    assert not [p for p in tmp_path.rglob('.tmp-*')] and not (out/'index.json').exists() and not (kind == 'cache' and out.exists())
    assert cli('data', '--source', 'mni152', '--res', 32, '--out', out).returncode == 0

def test_unreadable_folder_is_not_empty(tmp_path, mni_small, monkeypatch):
    write_brats(tmp_path/'b', mni_small, n=2)
    locked, scandir = tmp_path/'b'/'BraTS_001', os.scandir
    def deny(p='.'):
        if Path(p) == locked: raise PermissionError(13, 'Permission denied', str(p))
        return scandir(p)
    monkeypatch.setattr(os, 'scandir', deny)      # what chmod 000 does for a user other than root
    r = cli('data', '--source', tmp_path/'b', '--modality', 't1', '--res', 32, '--out', tmp_path/'s')
    assert r.returncode == 2 and f'{locked}: cannot read folder (permission denied)' in r.stderr, r.stderr

def test_killed_cache_write_leaves_no_temp_after_rerun(tmp_path):
    import fcntl
    out = tmp_path/'c.safetensors'
    dead = tmp_path/f'.tmp-{out.name}-abc123.safetensors'; dead.write_bytes(b'\0'*4096)       # a killed writer's temp file
    live = tmp_path/f'.tmp-{out.name}-def456.safetensors'; live.write_bytes(b'')
    fd = os.open(live, os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX)                         # a writer still at work
    other = tmp_path/'.tmp-other.safetensors-x.safetensors'; other.write_bytes(b'')
    try: assert cli('data', '--source', 'mni152', '--res', 32, '--out', out).returncode == 0
    finally: os.close(fd)
    assert out.is_file() and not dead.exists() and live.exists() and other.exists()


def test_both_datasets_follow_one_protocol():
    "The in-memory SliceData and the store's lazy StoreData are both `Slices`, with the same answers for the same slices."
    from mri_diffusion_nb.data import Slices, mni152_slices
    from mri_diffusion_nb.store import open_data
    mem, disk = mni152_slices(res=32), open_data('mni152', res=32)
    assert isinstance(mem, Slices) and isinstance(disk, Slices)
    for d in (mem, disk): assert isinstance(d.subset('train'), Slices) and isinstance(d.train, Slices)
    assert (len(mem), mem.res, mem.n_classes, mem.class_names) == (len(disk), disk.res, disk.n_classes, disk.class_names)
    assert mem.split == disk.split and mem.labels.tolist() == disk.labels.tolist()


# --- issue 29, kind 8: readers and writers of a store exclude each other; workers die with their parent ---

def test_store_read_locked_while_training(tmp_path):
    from mri_diffusion_nb.files import output_lock, read_lock
    out = tmp_path/'s'
    assert cli('data', '--source', 'mni152', '--res', 32, '--out', out).returncode == 0
    with read_lock(out):                     # what a training run holds on its store for the whole run
        r = cli('data', '--source', 'mni152', '--res', 32, '--n-classes', 2, '--out', out)
        assert r.returncode == 2 and 'in use by another command' in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert json.loads((out/'index.json').read_text())['settings']['n_classes'] == 4   # not rebuilt under the reader
    with output_lock(out, command='mri-diffusion data'):   # a store being built is not trained on
        r = cli('train', '--preset', 'tiny', '--data', out, '--steps', 1, '--out', tmp_path/'run')
        assert r.returncode == 2 and 'being written' in r.stderr and 'mri-diffusion data' in r.stderr, r.stderr
    assert not (tmp_path/'run'/'config.json').exists()

def test_workers_die_with_parent(tmp_path):
    code = ("import os, sys, time\nfrom concurrent.futures import ProcessPoolExecutor\nfrom multiprocessing import get_context\n"
            "from mri_diffusion_nb.files import die_with_parent\n"
            "if __name__ == '__main__':\n"
            "    ex = ProcessPoolExecutor(1, mp_context=get_context('spawn'), initializer=die_with_parent, initargs=(os.getpid(),))\n"
            "    print(ex.submit(os.getpid).result(), flush=True)\n"
            "    ex.submit(time.sleep, 60); time.sleep(60)\n")
    (tmp_path/'parent.py').write_text(code)
    p = subprocess.Popen([sys.executable, str(tmp_path/'parent.py')], stdout=subprocess.PIPE, text=True)
    worker = int(p.stdout.readline())
    os.kill(p.pid, signal.SIGKILL); p.wait()
    for _ in range(100):
        try: os.kill(worker, 0)
        except ProcessLookupError: break
        time.sleep(0.05)
    else: pytest.fail(f'worker {worker} outlived its killed parent')
