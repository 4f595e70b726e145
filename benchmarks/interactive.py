"""How long a reader waits (issue 27): `mri-diffusion --help` and a bad option in a fresh process, against importing
torch and diffusers (what they cost before the command line imported lazily); and each widget's answer to one
control move, kernel side (the browser test adds the page's own time), against the full 20-step grid.

    OMP_NUM_THREADS=2 python benchmarks/interactive.py        # about 3 minutes on a 2-core CPU; run it on a quiet machine

Writes benchmarks/results/interactive.json (protocol, machine, every timing) and prints the table with the ratios."""
import json, os, platform, statistics, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE/'results'/'interactive.json'
EXE = str(Path(sys.executable).parent/'mri-diffusion')


def fresh(cmd: list, n: int = 5) -> float:
    "Median wall time of `cmd` in a fresh process."
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(cmd, capture_output=True, text=True)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def moves(widget_move, values: list) -> list:
    "Seconds each control move takes to return (the widget has drawn its answer when the observer returns)."
    out = []
    for v in values:
        t = time.perf_counter()
        widget_move(v)
        out.append(time.perf_counter() - t)
    return out


def widgets() -> dict:
    import torch
    from mri_diffusion_nb.data import load_volume, mni152_path, slice_browser, mni152_slices
    from mri_diffusion_nb.schedule import timestep_widget
    from mri_diffusion_nb.sampling import load_model, sample, sampling_widget, trajectory_widget
    r = {}
    dm = load_model('demo', device='cpu')
    t = time.perf_counter()
    sw = sampling_widget(dm)  # the first grid is drawn in full
    r['sampling_full_grid_s'] = time.perf_counter() - t
    g = sw.children[0].children[0]
    r['sampling_guidance_move_s'] = moves(lambda v: setattr(g, 'value', v), [0.0, 3.0, 5.0, 9.0])
    sw.refiner.stop()
    sw2 = sampling_widget(dm, guidance_method='apg')
    pick = sw2.children[1].children[2]
    r['sampling_method_pick_s'] = moves(lambda v: setattr(pick, 'value', v), ['cfg', 'rescale', 'interval'])
    sw2.refiner.stop()
    x0 = mni152_slices(res=64).images[60]
    tw = timestep_widget(x0)
    sl = tw.children[1]  # the t slider
    r['timestep_move_s'] = moves(lambda v: setattr(sl, 'value', v), [0, 250, 500, 999])
    sb = slice_browser({'MNI152 2009 T1': load_volume(mni152_path())})
    s = sb.children[1]
    r['slice_browser_move_s'] = moves(lambda v: setattr(s, 'value', v), [20, 60, 100, 150])
    imgs, traj, x0s = sample(dm, classes=[1], guidance=7.0, sampler='ddim', steps=25, return_trajectory=True, net_batch=1)
    trw = trajectory_widget(torch.cat([traj[1:], x0s.clamp(-1, 1)], 1))
    st = trw.children[0]
    r['trajectory_move_s'] = moves(lambda v: setattr(st, 'value', v), [5, 12, 24])
    return r


def main():
    import torch
    res = dict(protocol=dict(
        what='wall seconds; fresh-process timings are medians of 5 launches; widget timings are one control move each, '
             'measured in the Python process that owns the widget (no browser)',
        threads=os.environ.get('OMP_NUM_THREADS', 'default'), cpus=os.cpu_count(), python=platform.python_version(),
        torch=torch.__version__, machine=platform.machine(), date=time.strftime('%Y-%m-%d')))
    res['help_s'] = fresh([EXE, '--help'])
    res['bad_option_s'] = fresh([EXE, 'train', '--preset', 'nope', '--out', 'x'])
    res['import_torch_diffusers_s'] = fresh([sys.executable, '-c', 'import torch, diffusers, matplotlib'])
    res.update(widgets())
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(res, indent=1) + '\n')
    worst = {k: max(v) for k, v in res.items() if k.endswith('_move_s') or k.endswith('_pick_s')}
    print(f"mri-diffusion --help        {res['help_s']:6.2f} s   (importing torch+diffusers+matplotlib: "
          f"{res['import_torch_diffusers_s']:.2f} s, {res['import_torch_diffusers_s']/res['help_s']:.0f}x longer)")
    print(f"bad option, one-line error  {res['bad_option_s']:6.2f} s")
    for k, v in worst.items(): print(f"{k:28s}{v:6.2f} s worst of {len(res[k])} moves (goal 2 s)")
    print(f"sampling widget, full 20-step grid {res['sampling_full_grid_s']:.1f} s: the preview answers "
          f"{res['sampling_full_grid_s']/max(res['sampling_guidance_move_s']):.1f}x sooner")
    print(f"wrote {OUT}")


if __name__ == '__main__': main()
