"""Chapter 18 from the outside: determinism, the three file formats read back, the manifest, a real kill and resume of bulk generation, bad inputs."""
import csv, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
import torch
from conftest import cli, free_port, lock_held_elsewhere, one_line_error
from mri_diffusion_nb.sampling import load_model, sample, guide
from mri_diffusion_nb.generate import to_uint, nifti_to_image, generate

@pytest.fixture
def run(tiny_run):
    "The session's tiny model (conftest): sampling plumbing needs weights, not quality."
    return tiny_run

def test_guidance_identities():
    u, c = torch.randn(2, 4, 1, 8, 8).unbind(0)
    assert torch.equal(guide(u, c, 0.), u) and torch.allclose(guide(u, c, 1.), c, atol=1e-6)

@pytest.mark.parametrize('sampler,steps', [('ddpm', 20), ('ddim', 10), ('dpm', 8), ('dpm-sde', 8)])
def test_same_seed_same_images(run, sampler, steps):
    m = load_model(run)
    a = sample(m, classes=[0, 1, 2], guidance=7.0, sampler=sampler, steps=steps, seed=3)
    b = sample(m, classes=[0, 1, 2], guidance=7.0, sampler=sampler, steps=steps, seed=3)
    c = sample(m, classes=[0, 1, 2], guidance=7.0, sampler=sampler, steps=steps, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (3, 1, 32, 32) and a.min() >= -1 and a.max() <= 1

def test_ddim_steps_with_the_clipped_prediction(run, monkeypatch):
    "DDIM's next step must use the ε implied by the clipped x_0 (diffusers' default keeps the raw ε: at w = 7 that lost the class in 75 % of samples)."
    from diffusers import DDIMScheduler
    seen, step = [], DDIMScheduler.step
    def spy(self, *a, **k): seen.append(k.get('use_clipped_model_output')); return step(self, *a, **k)
    monkeypatch.setattr(DDIMScheduler, 'step', spy)
    m = load_model(run)
    sample(m, classes=[0], sampler='ddim', steps=3); sample(m, classes=[0], sampler='ddim', steps=3, clip=False)
    assert seen == [True]*3 + [False]*3

def test_dpm_sde_is_stochastic_dpm_solver(run):
    from mri_diffusion_nb.sampling import make_scheduler
    m = load_model(run)
    assert make_scheduler(m.schedule, 'dpm-sde').config.algorithm_type == 'sde-dpmsolver++'
    assert make_scheduler(m.schedule, 'dpm').config.algorithm_type == 'dpmsolver++'
    assert not torch.equal(sample(m, classes=[0, 1], sampler='dpm-sde', steps=8), sample(m, classes=[0, 1], sampler='dpm', steps=8))

def test_three_formats_read_back_equal(run, tmp_path):
    import nibabel as nib, pydicom
    from PIL import Image
    r = cli('sample', '--model', run, '--n', 3, '--guidance', 7, '--sampler', 'dpm', '--steps', 5, '--format', 'png,nifti,dicom', '--out', tmp_path/'s')
    assert r.returncode == 0, r.stderr
    assert 'images/s' in r.stdout
    ref = sample(load_model(run), classes=[0, 1, 2], guidance=7.0, sampler='dpm', steps=5, seed=0)
    rows = list(csv.DictReader(open(tmp_path/'s'/'manifest.csv')))
    assert [int(x['class']) for x in rows] == [0, 1, 2]
    assert {x['sampler'] for x in rows} == {'dpm'} and {x['steps'] for x in rows} == {'5'} and {x['guidance'] for x in rows} == {'7.0'}
    assert len({x['model'] for x in rows}) == 1 and len(rows[0]['model']) == 12
    for i, x in enumerate(rows):
        png = np.array(Image.open(tmp_path/'s'/x['file']))
        assert np.array_equal(png, to_uint(ref[i, 0], 8))
        nii = nib.load(tmp_path/'s'/x['nifti'])
        assert b'SYNTHETIC' in nii.header['descrip'].item()
        np.testing.assert_array_equal(nifti_to_image(nii.get_fdata(dtype=np.float32)), ref[i, 0].numpy())
        d = pydicom.dcmread(tmp_path/'s'/x['dicom'])
        assert np.array_equal(d.pixel_array, to_uint(ref[i, 0], 16))
        assert d.SOPClassUID == '1.2.840.10008.5.1.4.1.1.4' and 'DERIVED' in d.ImageType and 'SYNTHETIC' in d.SeriesDescription
        assert str(d.PatientName) == 'SYNTHETIC^MRI' and d.PatientBirthDate == '' and d.PatientSex == '' and 'PatientAge' not in d
        np.testing.assert_allclose(pydicom.pixels.apply_modality_lut(d.pixel_array, d), ref[i, 0].numpy(), atol=2/65535)

def test_16bit_png(run, tmp_path):
    from PIL import Image
    assert cli('sample', '--model', run, '--n', 1, '--steps', 3, '--bits', 16, '--out', tmp_path/'s').returncode == 0
    a = np.array(Image.open(next((tmp_path/'s'/'png').glob('*.png'))))
    assert a.dtype == np.uint16 and a.max() > 255

@pytest.mark.slow
def test_killed_bulk_generation_resumes(run, tmp_path):
    args = ['sample', '--model', run, '--n', 24, '--batch-size', 2, '--sampler', 'ddim', '--steps', 20, '--format', 'png,dicom']
    assert cli(*args, '--out', tmp_path/'whole').returncode == 0
    exe = Path(sys.executable).parent/'mri-diffusion'
    p = subprocess.Popen([str(exe), *map(str, args), '--out', str(tmp_path/'killed')], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and p.poll() is None:
            m = tmp_path/'killed'/'.manifest-r0.csv'  # this process's part file, folded into manifest.csv at the end
            if m.exists() and len(m.read_text().splitlines()) >= 7: break
            time.sleep(0.02)
    finally:
        p.send_signal(signal.SIGKILL); p.wait()
    n_before = len(list(csv.DictReader(open(tmp_path/'killed'/'.manifest-r0.csv'))))
    assert 0 < n_before < 24, 'the run finished before it could be killed'
    r = cli(*args, '--out', tmp_path/'killed')
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(tmp_path/'killed'/'manifest.csv')))
    files = [x['file'] for x in rows]
    assert len(files) == 24 and len(set(files)) == 24
    assert sorted(p.name for p in (tmp_path/'killed'/'png').iterdir()) == sorted(p.name for p in (tmp_path/'whole'/'png').iterdir())
    for f in files: assert (tmp_path/'killed'/f).read_bytes() == (tmp_path/'whole'/f).read_bytes()
    assert not list((tmp_path/'killed').rglob('.tmp-*')) and not list((tmp_path/'killed').glob('.manifest-r*'))  # the rerun removed the kill's leftovers

@pytest.mark.parametrize('args,words', [
    (['--class', '9'], 'unknown class 9'),
    (['--guidance', '-1'], '--guidance must be a finite number at least 0'),
    (['--steps', '0'], '--steps must be at least 1'),
    (['--sampler', 'euler'], "unknown sampler 'euler'"),
])
def test_bad_sampling_options(run, tmp_path, args, words):
    r = cli('sample', '--model', run, '--out', tmp_path/'s', *args)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and 'Traceback' not in r.stderr, r.stderr
    assert not (tmp_path/'s').exists()

def test_bad_model_and_output(run, tmp_path):
    r = cli('sample', '--model', tmp_path/'nope', '--out', tmp_path/'s')
    assert r.returncode != 0 and 'model not found' in r.stderr and str(tmp_path/'nope') in r.stderr
    (tmp_path/'empty').mkdir()
    r = cli('sample', '--model', tmp_path/'empty', '--out', tmp_path/'s')
    assert r.returncode != 0 and 'not a model directory' in r.stderr and len(r.stderr.strip().splitlines()) == 1
    (tmp_path/'afile').write_text('x')
    r = cli('sample', '--model', run, '--out', tmp_path/'afile')
    assert r.returncode != 0 and 'is a file' in r.stderr and (tmp_path/'afile').read_text() == 'x'
    assert not (tmp_path/'s').exists()

# --- issue 13: one device story, images independent of batch size, ranks and restarts; exports viewers agree on ---

def test_model_on_default_device(run):
    m = load_model(run)
    assert m.device.type == ('cuda' if torch.cuda.is_available() else 'cpu')
    assert load_model(run, device='cpu').device.type == 'cpu'

@pytest.mark.parametrize('sampler', ['dpm-sde', 'ddpm'])
def test_image_independent_of_batch_size_and_restart(run, tmp_path, sampler):
    m = load_model(run, device='cpu')
    kw = dict(guidance=7.0, sampler=sampler, steps=6, seed=5)
    a = sample(m, classes=[0, 1, 2, 3], batch_size=4, **kw)
    b = sample(m, classes=[0, 1, 2, 3], batch_size=2, **kw)
    c = sample(m, classes=[2, 3], ids=[2, 3], **kw)
    assert torch.equal(a, b) and torch.equal(a[2:], c)   # bitwise on the CPU
    assert not torch.equal(a[0], a[1])
    g = dict(n=6, steps=6, sampler=sampler, seed=5, progress=False, run_id='fixed')
    generate(m, tmp_path/'whole', batch_size=4, **g)
    assert generate(m, tmp_path/'restart', batch_size=2, stop_after=1, **g)['complete'] is False
    generate(m, tmp_path/'restart', batch_size=2, **g)
    for f in sorted((tmp_path/'whole').rglob('*')):
        if f.is_file() and f.name != '.lock': assert f.read_bytes() == (tmp_path/'restart'/f.relative_to(tmp_path/'whole')).read_bytes(), f

def test_two_ranks_in_turn_write_the_bytes_of_one(run, tmp_path, monkeypatch):
    """Two ranks simulated in this process, one after the other: each writes its share (i % 2) and its own part file; the next run folds
    them into one manifest, byte-identical to one process with another batch size (the slow tier runs torchrun with 2 processes)."""
    import json
    import mri_diffusion_nb.generate as E
    m = load_model(run, device='cpu')
    g = dict(n=5, steps=3, sampler='dpm-sde', formats=('png', 'dicom'), progress=False, run_id='fixed')
    generate(m, tmp_path/'one', batch_size=3, **g)
    two = tmp_path/'two'
    def as_rank(r):
        meta = lambda o: (json.loads((two/'generation.json').read_text()), None) if r and isinstance(o, tuple) else o  # rank 0's broadcast
        return lambda cpu: (r, 2, lambda: None, meta)
    for r in (0, 1):
        monkeypatch.setattr(E, '_dist', as_rank(r))
        E.generate(m, two, batch_size=2, **g)
    assert [x['index'] for x in csv.DictReader(open(two/'manifest.csv'))] == ['0', '2', '4']   # rank 0 folded only its own share
    assert [x['index'] for x in csv.DictReader(open(two/'.manifest-r1.csv'))] == ['1', '3']
    monkeypatch.undo()
    assert generate(m, two, batch_size=2, **g)['written'] == 0                                   # nothing left to make: the fold completes it
    assert [x['index'] for x in csv.DictReader(open(two/'manifest.csv'))] == [str(i) for i in range(5)]
    files = lambda d: sorted(p.relative_to(d) for p in d.rglob('*') if p.is_file() and p.name != '.lock')
    assert files(tmp_path/'one') == files(two)
    for f in files(two): assert (two/f).read_bytes() == (tmp_path/'one'/f).read_bytes(), f

@pytest.mark.slow
def test_two_processes_write_the_same_bytes(run, tmp_path):
    "torchrun with 2 CPU processes (gloo), stopped after one batch each and resumed, writes byte-identical files to 1 process with another batch size."
    script = tmp_path/'gen.py'
    script.write_text(f"""import sys
from mri_diffusion_nb.sampling import load_model
from mri_diffusion_nb.generate import generate
m = load_model({str(run)!r}, device='cpu')
stop = int(sys.argv[3]) if len(sys.argv) > 3 else None  # stop as if killed after this many batches per process
generate(m, sys.argv[1], n=7, steps=4, sampler='dpm-sde', formats=('png', 'nifti', 'dicom'), batch_size=int(sys.argv[2]), progress=False, run_id='fixed', stop_after=stop)
""")
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    two = lambda *a: subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', str(free_port()), str(script), str(tmp_path/'two'), '2', *a],
                                    capture_output=True, text=True, env=env, timeout=600)
    r = two('1')
    assert r.returncode == 0, r.stderr[-2000:]
    parts = sorted(p.name for p in (tmp_path/'two').glob('.manifest-r*.csv'))
    assert parts == ['.manifest-r0.csv', '.manifest-r1.csv'] and not list(csv.DictReader(open(tmp_path/'two'/'manifest.csv')))  # one part file per rank, not yet folded
    r = two()
    assert r.returncode == 0, r.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path/'two'/'manifest.csv')))
    assert [x['index'] for x in rows] == [str(i) for i in range(7)]  # one manifest, every image once
    r = subprocess.run([sys.executable, str(script), str(tmp_path/'one'), '3'], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    one = sorted(p.relative_to(tmp_path/'one') for p in (tmp_path/'one').rglob('*') if p.is_file() and p.name != '.lock')
    two = sorted(p.relative_to(tmp_path/'two') for p in (tmp_path/'two').rglob('*') if p.is_file() and p.name != '.lock')
    assert one == two and len(one) == 3*7 + 2
    for f in one: assert (tmp_path/'one'/f).read_bytes() == (tmp_path/'two'/f).read_bytes(), f

def test_nifti_and_dicom_put_a_marker_at_the_same_corner(tmp_path):
    import nibabel as nib, pydicom
    from mri_diffusion_nb.generate import save_nifti, save_dicom, slice_geometry
    im = -torch.ones(20, 16); im[0, 0] = 1  # top-left pixel: subject's left, anterior (axial)
    g = slice_geometry(im.shape, 2.5, 4.0, 'axial', index=3)
    save_nifti(im, tmp_path/'a.nii.gz', geometry=g); save_dicom(im, tmp_path/'a.dcm', geometry=g)
    nii = nib.load(tmp_path/'a.nii.gz')
    v = np.argwhere(nii.get_fdata() > 0.5)[0]
    ras_nii = (nii.affine @ [*v, 1])[:3]
    d = pydicom.dcmread(tmp_path/'a.dcm')
    r, c = np.argwhere(d.pixel_array > 60000)[0]
    iop = np.array(d.ImageOrientationPatient, float); sp = np.array(d.PixelSpacing, float)
    lps = np.array(d.ImagePositionPatient, float) + c*sp[1]*iop[:3] + r*sp[0]*iop[3:]
    np.testing.assert_allclose(ras_nii, lps*[-1, -1, 1], atol=1e-6)
    assert ras_nii[0] < 0 and ras_nii[1] > 0 and ras_nii[2] == pytest.approx(12.0)   # left, anterior, slice 3 x 4 mm
    assert list(map(float, iop)) == [-1, 0, 0, 0, 1, 0] and nib.aff2axcodes(nii.affine) == ('R', 'A', 'S')
    assert nii.header.get_zooms() == (2.5, 2.5, 4.0) and float(d.SliceThickness) == 4.0 and list(map(float, d.PixelSpacing)) == [2.5, 2.5]

def test_demo_geometry_is_the_real_spacing():
    from mri_diffusion_nb.generate import model_geometry
    import nibabel as nib
    from mri_diffusion_nb.data import mni152_path
    img = nib.as_closest_canonical(nib.load(mni152_path()))
    fov = max(img.shape[0]*img.header.get_zooms()[0], img.shape[1]*img.header.get_zooms()[1])  # axial in-plane, padded square
    g = model_geometry(load_model('demo', device='cpu'))
    assert g['pixel_mm'] == pytest.approx(fov/64) and g['slice_mm'] == pytest.approx(img.header.get_zooms()[2]) and not g['nominal']

def test_dicom_uids_unique_per_run_and_positions_per_image(run, tmp_path):
    import pydicom
    m = load_model(run, device='cpu')
    for k in ('a', 'b'): generate(m, tmp_path/k, n=2, steps=3, formats=('dicom',), progress=False)
    da = [pydicom.dcmread(f) for f in sorted((tmp_path/'a'/'dicom').iterdir())]
    db = pydicom.dcmread(next((tmp_path/'b'/'dicom').iterdir()))
    assert da[0].StudyInstanceUID == da[1].StudyInstanceUID and da[0].FrameOfReferenceUID == da[1].FrameOfReferenceUID
    assert da[0].SOPInstanceUID != da[1].SOPInstanceUID and da[0].ImagePositionPatient != da[1].ImagePositionPatient
    assert {db.StudyInstanceUID, db.SeriesInstanceUID, db.FrameOfReferenceUID}.isdisjoint({da[0].StudyInstanceUID, da[0].SeriesInstanceUID, da[0].FrameOfReferenceUID})
    assert 'SYNTHETIC' in da[0].SeriesDescription and 'SYNTHETIC' in da[0].ImageComments and da[0].BurnedInAnnotation == 'NO'

@pytest.mark.skipif(not __import__('shutil').which('dciodvfy'), reason='dciodvfy (dicom3tools) not installed')
def test_dciodvfy_finds_no_errors(run, tmp_path):
    assert cli('sample', '--model', run, '--n', 2, '--steps', 3, '--format', 'dicom', '--out', tmp_path/'s').returncode == 0
    for f in (tmp_path/'s'/'dicom').iterdir():
        r = subprocess.run(['dciodvfy', str(f)], capture_output=True, text=True)
        errors = [l for l in (r.stdout + r.stderr).splitlines() if l.startswith('Error')]
        assert not errors, errors

# --- issue 18: bad inputs and faults in `sample` ---

@pytest.mark.parametrize('args,words', [
    (['--n', '1000000000'], '--n must be an integer from 1 to 10000000'),
    (['--guidance', 'nan'], '--guidance must be a finite number'),
    (['--guidance', 'inf'], '--guidance must be a finite number'),
    (['--batch-size', '0'], '--batch-size must be'),
    (['--batch-size', '-1'], '--batch-size must be'),
    (['--seed', str(2**62)], 'argument --seed: must be an integer from 0'),
    (['--device', 'tpu'], 'unknown device'),
])
def test_bad_numbers_refused_before_anything_is_written(run, tmp_path, args, words):
    one_line_error(cli('sample', '--model', run, '--out', tmp_path/'s', '--n', 2, '--steps', 2, *args), words)
    assert not (tmp_path/'s').exists()
    if args[0] in ('--guidance', '--seed'):  # the corrected command then runs
        assert cli('sample', '--model', run, '--out', tmp_path/'s', '--n', 2, '--steps', 2).returncode == 0

def test_second_writer_gets_one_line(run, tmp_path):
    with lock_held_elsewhere(tmp_path/'s', command='test holder'):
        one_line_error(cli('sample', '--model', run, '--n', 1, '--steps', 2, '--out', tmp_path/'s'), 'in use', 'test holder')
    assert cli('sample', '--model', run, '--n', 1, '--steps', 2, '--out', tmp_path/'s').returncode == 0

def test_resume_checks_files_cleans_temps_and_survives_garbage(run, tmp_path):
    args = ['sample', '--model', run, '--n', 4, '--steps', 2, '--format', 'png,dicom', '--out', tmp_path/'s']
    assert cli(*args).returncode == 0
    s = tmp_path/'s'
    ref = {p.name: p.read_bytes() for p in (s/'png').iterdir()}
    (s/'png'/'img-000001-c1.png').unlink(); (s/'dicom'/'img-000002-c2.dcm').write_bytes(b'')
    (s/'png'/'.tmp-img-000003-c3.png-abc.png').write_bytes(b'partial')
    with open(s/'manifest.csv', 'ab') as f: f.write(b'garbage,\xff\xfe,row\nimg-999999-c0.png,0\n\x00\x00half')
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert 'wrote 2 new images' in r.stdout
    assert {p.name: p.read_bytes() for p in (s/'png').iterdir()} == ref  # regenerated the same bytes; temp file gone
    assert (s/'dicom'/'img-000002-c2.dcm').stat().st_size > 0
    rows = list(csv.DictReader(open(s/'manifest.csv')))
    assert [r['index'] for r in rows] == ['0', '1', '2', '3']

def test_bad_models_give_one_line(run, tmp_path):
    import json, shutil
    from mri_diffusion_nb.sampling import find_weights
    u, sched, _ = find_weights(run)
    nocls = tmp_path/'nocls'; shutil.copytree(u, nocls)
    cfg = json.loads((nocls/'config.json').read_text()); cfg['num_class_embeds'] = None; cfg['class_embed_type'] = None
    (nocls/'config.json').write_text(json.dumps(cfg))
    one_line_error(cli('sample', '--model', nocls, '--out', tmp_path/'o1'), 'no class embeddings')
    badsch = tmp_path/'badsch'; shutil.copytree(u.parent, badsch)
    (badsch/'scheduler'/'scheduler_config.json').write_text('{"beta_schedule": "nonsense", ')
    one_line_error(cli('sample', '--model', badsch, '--out', tmp_path/'o2'), 'scheduler_config.json', 'not a usable scheduler config')
    pk = tmp_path/'pickle'; pk.mkdir(); shutil.copy(u/'config.json', pk/'config.json'); (pk/'diffusion_pytorch_model.bin').write_bytes(b'x')
    one_line_error(cli('sample', '--model', pk, '--out', tmp_path/'o3'), 'only pickle weights')
    assert not any((tmp_path/f'o{i}').exists() for i in (1, 2, 3))

def test_generation_json_keeps_a_hash_of_the_class_list(run, tmp_path):
    import json
    m = load_model(run, device='cpu')
    classes = [i % 4 for i in range(3000)]
    generate(m, tmp_path/'s', n=3000, classes=classes, steps=2, progress=False, stop_after=0)  # settings written, no image yet
    g = json.loads((tmp_path/'s'/'generation.json').read_text())
    assert set(g['classes']) == {'list_sha256'} and len((tmp_path/'s'/'generation.json').read_bytes()) < 2000
    with pytest.raises(ValueError, match='other settings'):  # another list is another run
        generate(m, tmp_path/'s', n=3000, classes=classes[::-1], steps=2, progress=False, stop_after=0)

# --- issue 15: guidance methods behind one interface ---

@pytest.mark.parametrize('method', ['interval', 'rescale', 'apg:eta=0,r=2', 'cfg++', 'threshold', 'auto'])
def test_guidance_methods_keep_images_independent_of_batch_size(run, method):
    "Every method acts per image (APG's momentum too): image i is the same alone, in a batch of 2 or of 4; and each differs from plain CFG at w = 7."
    m = load_model(run, device='cpu')
    kw = dict(guidance=7.0, sampler='dpm-sde', steps=5, seed=2, guidance_method=method)
    if method == 'auto':  # a weak partner with the same classes and size: a damaged copy of the model
        import copy
        kw['weak'] = copy.deepcopy(m.unet)
        with torch.no_grad():
            for p in kw['weak'].parameters(): p.mul_(0.9)
    a = sample(m, classes=[0, 1, 2, 3], batch_size=4, net_batch=4, **kw)
    b = sample(m, classes=[0, 1, 2, 3], batch_size=2, net_batch=4, **kw)
    c = sample(m, classes=[3], ids=[3], net_batch=4, **kw)
    assert torch.equal(a, b) and torch.equal(a[3:], c)
    plain = sample(m, classes=[0, 1, 2, 3], guidance=7.0, sampler='dpm-sde', steps=5, seed=2, net_batch=4)
    assert (a - plain).abs().max() > 1e-3

def test_guidance_method_recorded_and_part_of_the_resume_key(run, tmp_path):
    r = cli('sample', '--model', run, '--n', 2, '--steps', 3, '--guidance-method', 'apg:eta=0.5', '--out', tmp_path/'s')
    assert r.returncode == 0, r.stderr
    import json
    assert json.loads((tmp_path/'s'/'generation.json').read_text())['guidance_method'] == 'apg:eta=0.5,r=0,beta=-0.5'
    assert {x['guidance_method'] for x in csv.DictReader(open(tmp_path/'s'/'manifest.csv'))} == {'apg:eta=0.5,r=0,beta=-0.5'}
    one_line_error(cli('sample', '--model', run, '--n', 2, '--steps', 3, '--guidance-method', 'cfg', '--out', tmp_path/'s'), 'other settings')
    assert cli('sample', '--model', run, '--n', 2, '--steps', 3, '--guidance-method', 'apg:eta=0.5', '--out', tmp_path/'s').returncode == 0

@pytest.mark.parametrize('spec,words', [
    ('nope', "unknown guidance method 'nope'"),
    ('apg:x=1', "has no parameter 'x'"),
    ('rescale:phi=inf', 'must be finite'),
    ('interval:lo', 'name=value'),
])
def test_bad_guidance_method_is_one_line(run, tmp_path, spec, words):
    one_line_error(cli('sample', '--model', run, '--n', 2, '--steps', 2, '--guidance-method', spec, '--out', tmp_path/'s'), '--guidance-method', words)
    assert not (tmp_path/'s').exists()

def test_auto_guidance_refuses_a_mismatched_weak_model(run):
    from mri_diffusion_nb.unet import build_unet
    with pytest.raises(ValueError, match='does not match'):
        sample(load_model(run, device='cpu'), classes=[0], steps=2, guidance_method='auto', weak=build_unet('weak'))

@pytest.mark.parametrize('spec, words', [
    ('threshold:p=0', ['threshold:p=0', 'between 0.5 and 1']), ('cfg++:k=-2', ['cfg++:k=-2', 'above 0']),
    ('interval:lo=5,hi=1', ['hi must be above lo']), ('rescale:phi=7', ['rescale:phi=7', 'between 0 and 1']),
    ('apg:beta=3', ['apg:beta=3', 'momentum']), ('apg:eta=0,eta=1', ['given twice']), ('apg:r=-1', ['apg:r=-1'])])
def test_guidance_parameters_out_of_range_are_refused(tmp_path, spec, words):
    "Issue 29, kind 4: a guidance parameter is checked against its method's range, not only for being finite."
    from mri_diffusion_nb.guidance import Guidance
    with pytest.raises(ValueError) as e: Guidance.parse(spec)
    assert all(w in str(e.value) for w in words), str(e.value)
    one_line_error(cli('sample', '--model', 'demo', '--n', 1, '--steps', 2, '--guidance-method', spec,
                       '--out', tmp_path/'G'), *words)
    assert not (tmp_path/'G').exists()     # a refused command leaves nothing that blocks the corrected one

def test_a_run_that_made_nothing_does_not_block_the_corrected_one(tmp_path):
    "Issue 29, kind 3: generation.json left by a first run that failed before any image gives way to new settings."
    G = tmp_path/'G'
    assert cli('sample', '--model', 'demo', '--n', 1, '--steps', 2, '--out', G).returncode == 0
    for f in G.rglob('*'):                      # keep only what a run that died before its first image leaves
        if f.is_file() and f.name != 'generation.json': f.unlink()
    r = cli('sample', '--model', 'demo', '--n', 1, '--steps', 3, '--out', G)
    assert r.returncode == 0, r.stderr
    r = cli('sample', '--model', 'demo', '--n', 1, '--steps', 2, '--out', G)   # with an image there, settings bind
    one_line_error(r, 'other settings')
