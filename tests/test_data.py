"""Chapter 10 from the outside: the `data` subcommand end to end, folders split by subject, orientation, and every bad input."""
import os, subprocess, sys
from pathlib import Path
import numpy as np
import nibabel as nib
import pytest
import torch
from conftest import cli, one_line_error, write_cohort
from mri_diffusion_nb.data import load_cache, mni152_slices, folder_slices, load_volume, DataError



def test_import_in_fresh_process():
    r = subprocess.run([sys.executable, '-c', 'import mri_diffusion_nb.data, mri_diffusion_nb.cli; print("ok")'], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stderr

def test_cli_mni152_cache_roundtrip(tmp_path):
    out = tmp_path/'mni64.safetensors'
    r = cli('data', '--source', 'mni152', '--res', 64, '--out', out)
    assert r.returncode == 0, r.stderr
    assert 'axial 0-25%' in r.stdout and f'wrote {out}' in r.stdout
    back, ref = load_cache(out), mni152_slices(res=64)
    assert torch.equal(back.images, ref.images) and torch.equal(back.labels, ref.labels)
    assert back.split == ref.split and back.class_names == ref.class_names
    assert back.images.dtype == torch.float32 and back.images.shape[1:] == (1, 64, 64)
    assert back.images.min() >= -1 and back.images.max() <= 1
    assert back.settings['source'] == 'mni152' and back.settings['res'] == 64

@pytest.mark.parametrize('nested', [False, True])
def test_folder_with_csv_split_by_subject(tmp_path, mni_small, nested):
    csv = write_cohort(tmp_path/'cohort', mni_small, n=6, nested=nested)
    out = tmp_path/'cohort.safetensors'
    r = cli('data', '--source', tmp_path/'cohort', '--labels', csv, '--res', 32, '--val-frac', 0.34, '--out', out)
    assert r.returncode == 0, r.stderr
    d = load_cache(out)
    assert d.class_names == ['healthy', 'tumour']
    assert set(d.subjects) == {f'sub-{i:02d}' for i in range(6)}
    train, val = set(d.train.subjects), set(d.val.subjects)
    assert train and val and not (train & val)                        # no subject on both sides
    for s in set(d.subjects):                                           # every slice of a subject has the subject's class
        labs = {l for l, ss in zip(d.labels.tolist(), d.subjects) if ss == s}
        assert labs == {int(s[-2:]) % 2}
    assert {d.labels[d.subjects.index(s)].item() for s in val} == {0, 1}  # split within each class

def test_folder_without_csv_uses_levels(tmp_path, mni_small):
    write_cohort(tmp_path/'c', mni_small, n=3)
    d = folder_slices(tmp_path/'c', res=32, n_classes=3, progress=False)
    assert d.n_classes == 3 and set(d.labels.tolist()) == {0, 1, 2}

def test_las_gives_same_slices_as_ras(tmp_path, mni_small):
    ras = nib.Nifti1Image(mni_small, np.diag([3., 3, 3, 1]))
    flip = np.diag([-1., 1, 1, 1]); flip[0, 3] = mni_small.shape[0] - 1
    las = nib.Nifti1Image(mni_small[::-1].copy(), ras.affine @ flip)
    assert nib.aff2axcodes(las.affine) == ('L', 'A', 'S')
    nib.save(ras, tmp_path/'ras.nii.gz'); nib.save(las, tmp_path/'las.nii.gz')
    for n in ('ras', 'las'):
        assert cli('data', '--source', tmp_path/f'{n}.nii.gz', '--res', 32, '--out', tmp_path/f'{n}.safetensors').returncode == 0
    a, b = load_cache(tmp_path/'ras.safetensors'), load_cache(tmp_path/'las.safetensors')
    assert torch.equal(a.images, b.images)

def test_scaling_is_applied(tmp_path, mni_small):
    img = nib.Nifti1Image((mni_small*1000).astype(np.int16), np.diag([3., 3, 3, 1]))
    img.header.set_slope_inter(0.5, 10.)
    nib.save(img, tmp_path/'scaled.nii.gz')
    v = load_volume(tmp_path/'scaled.nii.gz')
    np.testing.assert_allclose(v.data, (mni_small*1000).astype(np.int16)*0.5 + 10, rtol=1e-6)

def test_4d_volume_pick(tmp_path, mni_small):
    nib.save(nib.Nifti1Image(np.stack([mni_small, 2*mni_small], -1), np.eye(4)), tmp_path/'s.nii.gz')
    np.testing.assert_allclose(load_volume(tmp_path/'s.nii.gz', volume=1).data, 2*mni_small)
    with pytest.raises(DataError, match=r'4D series of shape'): load_volume(tmp_path/'s.nii.gz')

def _bad(kind, d, base):
    "Make one kind of bad input under `d`; returns (path, expected words)."
    f = d/f'{kind}.nii.gz'
    if kind == 'missing': return f, 'file not found'
    if kind == 'empty': f.write_bytes(b''); return f, 'empty file'
    if kind == 'random': f.write_bytes(os.urandom(20000)); return f, 'not a readable NIfTI'
    if kind == 'truncated':
        nib.save(nib.Nifti1Image(base, np.eye(4)), f); raw = f.read_bytes(); f.write_bytes(raw[:len(raw)//2]); return f, 'truncated or corrupt'
    if kind == '2d': nib.save(nib.Nifti1Image(base[:, :, 20].copy(), np.eye(4)), f); return f, 'expected a 3D volume'
    if kind == '4d': nib.save(nib.Nifti1Image(np.stack([base]*3, -1), np.eye(4)), f); return f, '4D series'
    if kind == 'nan': nib.save(nib.Nifti1Image(np.full(base.shape, np.nan, np.float32), np.eye(4)), f); return f, 'no finite voxels'
    if kind == 'zeros': nib.save(nib.Nifti1Image(np.zeros(base.shape, np.float32), np.eye(4)), f); return f, 'constant volume'
    if kind == 'empty_dir': f = d/'empty_dir'; f.mkdir(); return f, 'no NIfTI files'
    raise ValueError(kind)

BAD = ['missing', 'empty', 'random', 'truncated', '2d', '4d', 'nan', 'zeros', 'empty_dir']

@pytest.mark.parametrize('kind', BAD)
@pytest.mark.parametrize('store', [False, True])
def test_bad_input_one_line_no_output(tmp_path, mni_small, kind, store):
    src, words = _bad(kind, tmp_path, mni_small)
    out = tmp_path/'out'/('store' if store else 'cache.safetensors')
    r = cli('data', '--source', src, '--res', 32, '--out', out) if kind == 'random' and not store else cli('data', '--source', src, '--res', 32, '--out', out)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert 'Traceback' not in r.stderr and str(src) in lines[0] and words in lines[0], lines[0]
    assert not out.exists() and not (out.parent.exists() and any(out.parent.iterdir()))

def test_folder_with_bad_files_fails_or_skips(tmp_path, mni_small):
    write_cohort(tmp_path/'c', mni_small, n=3)
    (tmp_path/'c'/'broken.nii.gz').write_bytes(os.urandom(5000))
    nib.save(nib.Nifti1Image(np.zeros(mni_small.shape, np.float32), np.eye(4)), tmp_path/'c'/'blank.nii.gz')
    out = tmp_path/'c.safetensors'
    r = cli('data', '--source', tmp_path/'c', '--res', 32, '--out', out)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and 'blank.nii.gz' in r.stderr
    assert not out.exists()
    r = cli('data', '--source', tmp_path/'c', '--res', 32, '--on-error', 'skip', '--out', out)
    assert r.returncode == 0, r.stderr
    assert 'skipped' in r.stdout and 'broken.nii.gz' in r.stdout and 'blank.nii.gz' in r.stdout
    d = load_cache(out)
    assert set(d.subjects) == {'sub-00', 'sub-01', 'sub-02'}
    assert [Path(f).name for f, _ in d.settings['skipped']] == ['blank.nii.gz', 'broken.nii.gz']

def test_existing_cache_survives_a_failed_run(tmp_path):
    out = tmp_path/'cache.safetensors'
    assert cli('data', '--source', 'mni152', '--res', 32, '--out', out).returncode == 0
    before = out.read_bytes()
    r = cli('data', '--source', tmp_path/'nope.nii', '--res', 32, '--out', out)
    assert r.returncode != 0 and out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ['cache.safetensors']

def test_labels_csv_errors(tmp_path, mni_small):
    write_cohort(tmp_path/'c', mni_small, n=2)
    bad = tmp_path/'bad.csv'; bad.write_text('name,diagnosis\nsub-00,x\n')
    r = cli('data', '--source', tmp_path/'c', '--labels', bad, '--res', 32, '--out', tmp_path/'o.safetensors')
    assert r.returncode != 0 and 'bad.csv' in r.stderr and "'subject' and 'class'" in r.stderr
    missing = tmp_path/'partial.csv'; missing.write_text('subject,class\nsub-00,a\n')
    r = cli('data', '--source', tmp_path/'c', '--labels', missing, '--res', 32, '--out', tmp_path/'o.safetensors')
    assert r.returncode != 0 and "sub-01" in r.stderr and 'no row' in r.stderr

@pytest.mark.parametrize('damage', ['no_labels', 'no_subjects_meta', 'bad_json', 'short_labels', 'index_out_of_range'])
def test_damaged_cache_one_line(tmp_path, damage):
    "A cache with the right format tag but missing or inconsistent fields (issue 18): one line naming it, for `load_cache` and `train`."
    from safetensors.torch import save_file
    from safetensors import safe_open
    good = tmp_path/'good.safetensors'
    assert cli('data', '--source', 'mni152', '--res', 32, '--out', good).returncode == 0
    with safe_open(str(good), framework='pt') as f: meta, t = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    if damage == 'no_labels': del t['labels']
    if damage == 'no_subjects_meta': del meta['subjects']
    if damage == 'bad_json': meta['class_names'] = '[oops'
    if damage == 'short_labels': t['labels'] = t['labels'][:3].clone()
    if damage == 'index_out_of_range': t['subject_index'] = t['subject_index'] + 5
    bad = tmp_path/'bad.safetensors'; save_file(t, str(bad), metadata=meta)
    with pytest.raises(DataError, match='damaged slice cache'): load_cache(bad)
    r = cli('train', '--preset', 'tiny', '--data', bad, '--steps', 1, '--out', tmp_path/'run')
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and str(bad) in r.stderr and 'damaged slice cache' in r.stderr, r.stderr
    assert not (tmp_path/'run'/'config.json').exists()

@pytest.mark.parametrize('opt, words', [
    (['--val-frac', '1.5'], ['--val-frac', '1.5']), (['--val-frac', 'nan'], ['--val-frac', 'nan']),
    (['--tumour-mm2', 'nan'], ['--tumour-mm2', 'nan']), (['--tumour-mm2', '-1'], ['--tumour-mm2']),
    (['--bins', '40,60'], ['--bins needs --labels']), (['--bins', 'nan,40', '--labels', 'x.csv'], ['--bins', 'finite']),
    (['--bins', '40,40', '--labels', 'x.csv'], ['--bins', 'distinct']), (['--seed', '-1'], ['--seed', '-1']),
    (['--pattern', ''], ['--pattern', 'empty']), (['--pattern', '/abs/*.nii'], ['--pattern', 'inside --source']),
    (['--pattern', '../*.nii'], ['--pattern']), (['--val-every', '1'], ['--val-every'])])
def test_bad_data_options_name_the_option(tmp_path, opt, words):
    r = cli('data', '--source', tmp_path, '--res', 16, '--out', tmp_path/'S', *opt)
    one_line_error(r, *words)
    assert not (tmp_path/'S').exists()

def test_hidden_folders_are_not_data(tmp_path, mni_small):
    (tmp_path/'src'/'.ipynb_checkpoints').mkdir(parents=True)
    for f in (tmp_path/'src'/'a.nii.gz', tmp_path/'src'/'.ipynb_checkpoints'/'b.nii.gz'):
        nib.save(nib.Nifti1Image(mni_small, np.eye(4)), f)
    from mri_diffusion_nb.data import find_volumes
    assert [p.name for p in find_volumes(tmp_path/'src')] == ['a.nii.gz']

def test_nothing_dropped_or_accepted_silently(tmp_path, mni_small):
    "Issue 29, kinds 4 and 5 in the data command: every such case is listed or refused in one line."
    from conftest import write_brats
    csv = write_cohort(tmp_path/'c', mni_small, n=4)
    ages = tmp_path/'ages.csv'
    ages.write_text('subject,AGE\nsub-00,30\nsub-01,nan\nsub-02,50\nsub-03,70\n')
    one_line_error(cli('data', '--source', tmp_path/'c', '--labels', ages, '--label-column', 'AGE', '--bins', '40,60',
                       '--res', 16, '--out', tmp_path/'S1'), 'ages.csv', 'sub-01', 'not a finite number')
    csv.write_text(csv.read_text() + 'sub-99,ghost\n')                     # a CSV row with no volume makes no class
    d = folder_slices(tmp_path/'c', labels_csv=csv, res=16, progress=False)
    assert d.class_names == ['healthy', 'tumour']
    write_brats(tmp_path/'b', mni_small, n=3)
    (tmp_path/'b'/'BraTS_001'/'BraTS_001_t1.nii.gz').unlink()              # a subject without the asked contrast
    one_line_error(cli('data', '--source', tmp_path/'b', '--modality', 't1', '--res', 16, '--out', tmp_path/'S2'),
                   'BraTS_001', 'no t1 volume')
    r = cli('data', '--source', tmp_path/'b', '--modality', 't1', '--res', 16, '--on-error', 'skip', '--out', tmp_path/'S3')
    assert r.returncode == 0 and 'skipped' in r.stdout and 'BraTS_001' in r.stdout, r.stdout
    seg = tmp_path/'b'/'BraTS_002'/'BraTS_002_seg.nii.gz'                  # a seg map of negative labels
    nib.save(nib.Nifti1Image(-np.ones(mni_small.shape, np.int16), np.diag([3., 3, 3, 1])), seg)
    one_line_error(cli('data', '--source', tmp_path/'b', '--modality', 't1', '--res', 16, '--on-error', 'raise',
                       '--exclude', 'BraTS_001*', '--out', tmp_path/'S4'), 'BraTS_002_seg', 'negative')

def test_symlinked_subject_folders_are_read(tmp_path, mni_small):
    write_cohort(tmp_path/'elsewhere', mni_small, n=2, nested=True)
    (tmp_path/'c').mkdir()
    for s in ('sub-00', 'sub-01'): (tmp_path/'c'/s).symlink_to(tmp_path/'elsewhere'/s)
    from mri_diffusion_nb.data import find_subjects
    assert [s for s, _, _ in find_subjects(tmp_path/'c')] == ['sub-00', 'sub-01']
