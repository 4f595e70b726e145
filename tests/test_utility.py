"""Train on synthetic, test on real: `mri-diffusion utility` end to end at a tiny size, its bad options, and the experiment's
bookkeeping (which slices each condition trains on, determinism, the real-data-equivalence read-off)."""
import json
import numpy as np
import pytest
import torch
from conftest import cli
from mri_diffusion_nb.data import SliceData
from mri_diffusion_nb.downstream import conditions, equivalent_real, stratified_subset, summarise, utility_experiment

@pytest.fixture
def fake(demo_fake):
    "The session's 8 demo samples (conftest)."
    return demo_fake

def _toy(n_per=12, res=16, seed=0):
    "Four classes told apart by where a bright square sits; every 4th slice held out."
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(4).repeat_interleave(n_per)
    x = -torch.ones(len(y), 1, res, res) + 0.1*torch.randn(len(y), 1, res, res, generator=g)
    for i, c in enumerate(y.tolist()):
        r0, c0 = 2 + 8*(c // 2), 2 + 8*(c % 2)
        x[i, :, r0:r0 + 5, c0:c0 + 5] = 0.9
    split = ['val' if i % 4 == 1 else 'train' for i in range(len(y))]
    return SliceData(x.clamp(-1, 1), y, ['toy']*len(y), [f'c{i}' for i in range(4)], split, dict(source='toy'))

def test_subsets_and_conditions():
    y = np.repeat([0, 1, 2, 3], [30, 10, 3, 1])
    for f in (0.1, 0.25, 0.5):
        s = stratified_subset(y, f, seed=1)
        assert len(set(s)) == len(s) and set(np.unique(y[s])) == {0, 1, 2, 3}  # every class kept, no duplicates
        assert abs(np.bincount(y[s], minlength=4)[0] - round(30*f)) == 0
    assert not np.array_equal(stratified_subset(y, 0.5, 0), stratified_subset(y, 0.5, 1))
    names = [c[0] for c in conditions((0.5, 0.1))]
    assert names == ['real 100%', 'synthetic only', 'real 10%', 'real 10% + synthetic', 'real 50%', 'real 50% + synthetic']

def test_equivalent_real_bounds():
    row = lambda c, f, s, m: dict(condition=c, fraction=f, synthetic=s, mean=m, ci95=(m - 0.01, m + 0.01))
    t = [row('real 100%', 1.0, False, 0.9), row('real 50%', 0.5, False, 0.8), row('synthetic only', 0.0, True, 0.2),
         row('real 50% + synthetic', 0.5, True, 0.85)]
    e = {r['condition']: r for r in equivalent_real(t, n_classes=4, n_train=100)}
    assert e['synthetic only']['bound'] == 'at most' and e['synthetic only']['equivalent_fraction'] == 0.0  # below chance
    assert e['real 50% + synthetic']['equivalent_fraction'] == pytest.approx(0.75)  # halfway between 0.8 and 0.9
    assert e['real 50% + synthetic']['replaced_slices'] == 25 and e['real 50% + synthetic']['overlaps_real_only'] is False

def test_experiment_is_deterministic_and_honest():
    data = _toy()
    fx, fy = data.images[:8].clone(), data.labels[:8].clone()
    kw = dict(fractions=(0.5,), seeds=(0, 1), steps=15, batch_size=8, width=4, res=16)
    a, b = utility_experiment(data, (fx, fy), **kw), utility_experiment(data, (fx, fy), **kw)
    assert [r['accuracy'] for r in a['runs']] == [r['accuracy'] for r in b['runs']]
    n_train, n_val = data.split.count('train'), data.split.count('val')
    by = {(r['condition'], r['seed']): r for r in a['runs']}
    assert by['real 100%', 0]['n_real'] == n_train and by['synthetic only', 0]['n_real'] == 0
    assert by['real 50% + synthetic', 1]['n_synthetic'] == 8 and by['real 50%', 1]['n_synthetic'] == 0
    assert {r['n_test'] for r in a['runs']} == {n_val}
    t = {r['condition']: r for r in summarise(a['runs'])}
    accs = t['real 100%']['accuracies']
    assert t['real 100%']['mean'] == pytest.approx(np.mean(accs)) and t['real 100%']['ci95'][0] <= t['real 100%']['mean']

def test_cli_utility(fake, tmp_path):
    r = cli('utility', '--fake', fake, '--out', tmp_path/'rep', '--fractions', '0.5', '--seeds', 1, '--steps', 10)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path/'rep').iterdir()) == ['report.json', 'report.md', 'utility.png']
    rep = json.loads((tmp_path/'rep'/'report.json').read_text())
    assert [r['condition'] for r in rep['runs']] == ['real 100%', 'synthetic only', 'real 50%', 'real 50% + synthetic']
    assert rep['protocol']['n_synthetic'] == 8 and rep['protocol']['n_test_real'] > 0
    n = rep['protocol']['n_test_real']                                         # an accuracy is a count of held-out slices over n
    assert all(r['n_test'] == n and abs(r['accuracy']*n - round(r['accuracy']*n)) < 1e-6 for r in rep['runs'])
    md = (tmp_path/'rep'/'report.md').read_text()
    assert 'held-out real slices' in md and 'Real data replaced at equal accuracy' in md
    for bad, msg in ((['--fractions', '0.5,x'], '--fractions must be'), (['--fractions', '1.5'], 'strictly between'), (['--seeds', '0'], '--seeds')):
        r = cli('utility', '--fake', fake, '--out', tmp_path/'bad', *bad)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path/'bad').exists()
    r = cli('utility', '--fake', tmp_path/'nowhere', '--out', tmp_path/'bad', '--seeds', 1, '--steps', 2)
    assert r.returncode == 2 and 'nowhere' in r.stderr and not (tmp_path/'bad').exists()
