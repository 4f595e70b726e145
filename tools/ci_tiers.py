"""Keep the README's table of test-tier times: fold the `ci-times-TIER.json` that a passing `.ci/run` wrote into nbs/ci_tiers.json.

    bash .ci/run && python tools/ci_tiers.py ci-times-default.json            # from a clean clone: d=$(mktemp -d) && git clone . $d
    RUN_SLOW=1 bash .ci/run && python tools/ci_tiers.py ci-times-slow.json
    python tools/run_nb.py nbs/index.ipynb && python tools/make_readme.py   # the index reads the file; the README is rendered from it

A run that failed (exit status other than 0) is refused: the table quotes only passing runs.
"""
import json, sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1]/'nbs'/'ci_tiers.json'

def fold(path, out=OUT)->dict:
    run = json.loads(Path(path).read_text())
    if run.get('exit_status') != 0: raise SystemExit(f"{path}: exit status {run.get('exit_status')}: only a passing run goes in the table")
    tiers = json.loads(out.read_text()) if out.exists() else {}
    tiers[run['tier']] = run
    out.write_text(json.dumps(tiers, indent=1) + '\n')
    return tiers

if __name__ == '__main__':
    for p in sys.argv[1:]: print(f"{OUT}: {', '.join(fold(p))}")
