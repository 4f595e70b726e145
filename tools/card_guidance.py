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

def guidance_section(study:dict, w:float=7.0)->str:
    "Markdown: the recommendation, its reason, and every measured row at `w`."
    rows = [r for r in study['rows'] if r['guidance'] == w]
    best = recommend(study['rows'], w=w)
    gap = diversity_gap(best)
    table = '\n'.join(f"| {r['sampler']} | `{r['method']}` | {r['adherence']:.1%} | " + ' / '.join(f"{v:.0%}" for v in r['per_class'])
                      + f" | {r['ms_ssim']:.3f} ({r['ms_ssim_real']:.3f}) | {r['fd_standin']:.3f} | {r.get('nfe', '')} | {meets_goal(r)} |" for r in rows)
    return f"""{HEADING}

Use **`--guidance-method {best['method']}` with `--sampler {best['sampler'].rsplit('-', 1)[0]} --steps {best['sampler'].rsplit('-', 1)[1]}`** at the reference guidance w = {w:g}
(the defaults of `sample`, `generate`, `mri-diffusion sample` and `mri-diffusion demo`; every output records its method in `generation.json` and the manifest's `guidance_method` column).
On this model even its worst class keeps the requested level in {min(best['per_class']):.0%} of samples, and its diversity (mean pairwise MS-SSIM within a class) is {abs(gap):.1%} {'below' if gap < 0 else 'above'} the real slices',
and its verdict on the goal set for a 20-step sampler (every class within 2 points of 100 % by its Wilson 95 % interval at
{best['n']//len(best['per_class'])} per class, diversity within 5 % of the real slices') is **{meets_goal(best)}**: at this n a class at 100 % has a lower bound of
{wilson_ci(best['n']//len(best['per_class']), best['n']//len(best['per_class']))[0]:.0%}, so the study can show that a setting misses the goal, not that it meets it.

Measured in chapter 17's study (`benchmarks/guidance_methods.py`): {study['protocol']}.

| sampler | method | adherence | per class | MS-SSIM (real) | stand-in FD | NFE | goal |
|---|---|---|---|---|---|---|---|
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
    a = ap.parse_args()
    print(update_card(a.card, a.study))
