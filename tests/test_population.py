"""The simulated population (chapter 02): deterministic per (seed, subject), read by the ordinary `data` command in both
layouts, resumable, and one-line errors that write nothing. Subjects are made on a 3-4 mm grid here (`--voxel-mm`) to stay fast."""
import csv, json
from pathlib import Path
import numpy as np
import nibabel as nib
from conftest import cli, one_line_error
from mri_diffusion_nb.population import make_population, make_subject, subject_files

def _rows(f): return list(csv.DictReader(open(f)))

def test_same_seed_and_subject_same_volume_others_differ():
    a, b, c = make_subject(7, 2, voxel_mm=4.), make_subject(7, 2, voxel_mm=4.), make_subject(7, 3, voxel_mm=4.)
    assert np.array_equal(np.asarray(a['image'].dataobj), np.asarray(b['image'].dataobj)) and a['truth'] == b['truth']
    assert np.array_equal(a['image'].affine, b['image'].affine)
    assert a['truth'] != c['truth'] and (a['image'].shape != c['image'].shape or not np.array_equal(a['image'].affine, c['image'].affine))

def test_ixi_layout_gives_age_classes_through_data(tmp_path):
    P, S = tmp_path/'P', tmp_path/'S'
    r = cli('population', '--n', 4, '--layout', 'ixi', '--seed', 3, '--voxel-mm', 3, '--out', P)
    assert r.returncode == 0 and 'wrote 4 subjects' in r.stdout, r.stderr
    img = nib.load(P/'IXI0000-SIM-T1.nii.gz')
    assert img.get_data_dtype() == np.int16 and img.dataobj.slope not in (1, 0)   # int16 with scl_slope
    demo, truth = _rows(P/'demographics.csv'), _rows(P/'truth.csv')
    assert [d['subject'] for d in demo] == [f'IXI{i:04d}' for i in range(4)] and [d['AGE'] for d in demo] == [t['age'] for t in truth]
    r = cli('data', '--source', P, '--labels', P/'demographics.csv', '--label-column', 'AGE', '--bins', '40,60',
            '--res', 32, '--slice-mm', 4, '--out', S)
    assert r.returncode == 0, r.stderr
    from mri_diffusion_nb.store import open_data
    d = open_data(S)
    from mri_diffusion_nb.data import bin_names
    names = bin_names([40., 60.], 'AGE')
    want = {t['subject']: names[int(np.searchsorted([40, 60], float(t['age']), side='right'))] for t in truth}
    got = {s: d.class_names[int(y)] for s, y in zip(d.subjects, d.labels)}
    assert {s.split('-')[0]: c for s, c in got.items()} == want, (got, want)

def test_brats_layout_gives_tumour_classes_through_data(tmp_path):
    P, S = tmp_path/'P', tmp_path/'S'
    r = cli('population', '--n', 3, '--layout', 'brats', '--seed', 4, '--voxel-mm', 3, '--workers', 2, '--out', P)
    assert r.returncode == 0 and '3 with a tumour' in r.stdout, r.stderr
    truth = _rows(P/'truth.csv')
    assert all(float(t['tumour_ml']) > 0 for t in truth)
    for t in truth:   # the truth table's tumour volume is the seg map's on its own grid
        seg = nib.load(P/t['subject']/f"{t['subject']}_seg.nii.gz")
        ml = abs(np.linalg.det(seg.affine[:3, :3]))/1000
        assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2, 4}
        assert abs((np.asarray(seg.dataobj) > 0).sum()*ml - float(t['tumour_ml'])) < 1e-5*float(t['tumour_ml'])   # float32 affine
    r = cli('data', '--source', P, '--modality', 't1', '--res', 32, '--slice-mm', 3, '--out', S)
    assert r.returncode == 0, r.stderr
    from mri_diffusion_nb.store import open_data
    d = open_data(S)
    assert list(d.class_names) == ['no tumour', 'tumour']
    per = {s: {int(y) for s2, y in zip(d.subjects, d.labels) if s2 == s} for s in set(d.subjects)}
    assert sorted(per) == [t['subject'] for t in truth] and all(v == {0, 1} for v in per.values()), per
    planes = _rows(P/'slices.csv')   # per-plane truth adds up to the subject's volume (3 mm voxels: within 25 %)
    for t in truth:
        ml = sum(float(s['tumour_mm2']) for s in planes if s['subject'] == t['subject'])/1000
        assert abs(ml - float(t['tumour_ml'])) < 0.25*float(t['tumour_ml']), (ml, t['tumour_ml'])
    from mri_diffusion_nb.store import truth_agreement
    rows = truth_agreement(S)        # the store's tumour labels, slice by slice, against the truth's nearest plane
    assert sum(r['slices'] for r in rows) == len(d) and all(r['agree'] >= r['slices'] - 3 for r in rows), rows

def test_a_stopped_run_resumes_and_makes_the_same_subjects(tmp_path):
    P = tmp_path/'P'
    make_population(2, P, layout='brats', seed=5, progress=False, voxel_mm=4.)     # stopped after 2 of 4
    first = (P/'BraTS-SIM-0000'/'BraTS-SIM-0000_t1.nii.gz').stat().st_mtime_ns
    rows = make_population(4, P, layout='brats', seed=5, progress=False, voxel_mm=4.)
    assert (P/'BraTS-SIM-0000'/'BraTS-SIM-0000_t1.nii.gz').stat().st_mtime_ns == first   # not made again
    f = subject_files(P, 'brats', 3)['image']
    before = f.read_bytes()
    f.unlink()
    (P/'.population'/'BraTS-SIM-0003.json').unlink()                                  # killed while writing subject 3
    assert make_population(4, P, layout='brats', seed=5, progress=False, voxel_mm=4.) == rows
    assert f.read_bytes() == before and len(_rows(P/'truth.csv')) == 4
    assert not list(P.rglob('.tmp-*'))

def test_bad_arguments_are_one_line_and_write_nothing(tmp_path):
    one_line_error(cli('population', '--n', 0, '--out', tmp_path/'a'), '--n must be at least 1')
    one_line_error(cli('population', '--n', 2, '--layout', 'oasis', '--out', tmp_path/'a'), '--layout')
    one_line_error(cli('population', '--n', 2, '--workers', 0, '--out', tmp_path/'a'), '--workers')
    one_line_error(cli('population', '--n', 2, '--tumour-share', 2, '--out', tmp_path/'a'), '--tumour-share')
    assert not (tmp_path/'a').exists()
    (tmp_path/'f').write_text('x')
    one_line_error(cli('population', '--n', 2, '--out', tmp_path/'f'), 'is a file')
    assert (tmp_path/'f').read_text() == 'x'
    P = tmp_path/'P'
    make_population(1, P, seed=1, progress=False, voxel_mm=4.)
    one_line_error(cli('population', '--n', 1, '--seed', 2, '--voxel-mm', 4, '--out', P), 'other settings')
