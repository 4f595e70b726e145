"""The model card's guidance section, from chapter 17's study (`nbs/guidance_study.json`): which method and sampler to use at w = 7, and the rows that say why.

    python tools/card_guidance.py [--study nbs/guidance_study.json] [--card mri_diffusion_nb/assets/demo/MODEL_CARD.md]

Replaces the card's `## Guidance method` section (or appends it), atomically. `tools/ship_demo.py` writes the same section when it writes a new card.
The choice is `mri_diffusion_nb.guidance.recommend`, the function the chapter prints its recommendation with."""
import argparse, json
from pathlib import Path
from mri_diffusion_nb.files import atomic_path
from mri_diffusion_nb.guidance import diversity_gap, meets_goal, recommend
from mri_diffusion_nb.runtime import wilson_ci

ROOT = Path(__file__).resolve().parents[1]
HEADING = '## Guidance method'

JUDGES = ROOT/'benchmarks'/'results'/'judges.json'

def _second_judge(w:float)->dict:
    "(sampler, method) -> the position judge's adherence with its interval, from `benchmarks/judges.py`, at `w`."
    if not JUDGES.exists(): return {}
    return {(r['sampler'], r['method']): f"{r['b']['adherence']:.1%} [{r['b']['ci95'][0]:.1%}, {r['b']['ci95'][1]:.1%}]"
            for r in json.loads(JUDGES.read_text())['rows'] if r['guidance'] == w}

def guidance_section(study:dict, w:float=7.0)->str:
    "Markdown: the recommendation, its reason, and every measured row at `w`."
    rows = [r for r in study['rows'] if r['guidance'] == w]
    best = recommend(study['rows'], w=w)
    gap = diversity_gap(best)
    second = _second_judge(w)
    ci = lambda r: wilson_ci(round(r['adherence']*r['n']), r['n'])
    table = '\n'.join(f"| {r['sampler']} | `{r['method']}` | {r['adherence']:.1%} [{ci(r)[0]:.1%}, {ci(r)[1]:.1%}] | "
                      + ' / '.join(f"{v:.0%}" for v in r['per_class'])
                      + f" | {second.get((r['sampler'], r['method'].split(':')[0]), '–')}"
                      + f" | {r['ms_ssim']:.3f} ({r['ms_ssim_real']:.3f}) | {r['fd_standin']:.3f} | {r.get('nfe', '')} | {meets_goal(r)} |" for r in rows)
    return f"""{HEADING}

Use **`--guidance-method {best['method']}` with `--sampler {best['sampler'].rsplit('-', 1)[0]} --steps {best['sampler'].rsplit('-', 1)[1]}`** at the reference guidance w = {w:g}
(the defaults of `sample`, `generate`, `mri-diffusion sample` and `mri-diffusion demo`; every output records its method in `generation.json` and the manifest's `guidance_method` column).
On this model even its worst class keeps the requested level in {min(best['per_class']):.0%} of samples, and its diversity (mean pairwise MS-SSIM within a class) is {abs(gap):.1%} {'below' if gap < 0 else 'above'} the real slices',
and its verdict on the goal set for a 20-step sampler (every class within 2 points of 100 % by its Wilson 95 % interval at
{best['n']//len(best['per_class'])} per class, diversity within 5 % of the real slices') is **{meets_goal(best)}**: at this n a class at 100 % has a lower bound of
{wilson_ci(best['n']//len(best['per_class']), best['n']//len(best['per_class']))[0]:.0%}, so the study can show that a setting misses the goal, not that it meets it.

Measured in chapter 17's study (`benchmarks/guidance_methods.py`): {study['protocol']}.

| sampler | method | adherence [Wilson 95 %] | per class | position judge (chapter 24) | MS-SSIM (real) | stand-in FD | NFE | goal |
|---|---|---|---|---|---|---|---|---|
{table}

Methods and samplers not in the table at w = {w:g} have not been measured yet; the chapter lists what is pending.
"""

def update_card(card:Path, study:Path)->str:
    "Write the section into `card` (replacing an older one), atomically; returns the section."
    sec = guidance_section(json.loads(study.read_text()))
    text = card.read_text()
    text = (text.split(HEADING)[0].rstrip('\n') + '\n\n' + sec)
    with atomic_path(card) as tmp: tmp.write_text(text)
    return sec

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--study', default=ROOT/'nbs'/'guidance_study.json', type=Path)
    ap.add_argument('--card', default=ROOT/'mri_diffusion_nb'/'assets'/'demo'/'MODEL_CARD.md', type=Path)
    ap.add_argument('--check', action='store_true', help='exit 1 if the card\'s section differs from the study')
    a = ap.parse_args()
    if a.check:
        sec = guidance_section(json.loads(a.study.read_text()))
        if HEADING + a.card.read_text().split(HEADING, 1)[-1] != sec:
            raise SystemExit(f"{a.card}: its guidance section differs from {a.study}; run tools/card_guidance.py")
    else: print(update_card(a.card, a.study))
