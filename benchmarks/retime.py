"""Replace whole configurations of a benchmark result with those of a later run.

    python benchmarks/retime.py benchmarks/results/cpu.json RERUN/cpu.json \
        --why "the first run's bare forward pass read 2.5 times its usual time"
    python benchmarks/retime.py benchmarks/results/cpu.json --maps-again \
        --why "the map check compared different memory layouts"

Every row, map comparison and peak of each configuration (section and label)
that the later run measured replaces the earlier run's; ratios and the
acceptance table are computed again. With ``--interleave`` all the cases of a
configuration are timed together in one process, so a configuration measured
again is as comparable within itself as the first time. The header of the
Markdown names what was measured again, when, and why. ``--maps-again``
compares the maps of every configuration again instead (each in a fresh
process, on freshly drawn random weights), leaving times and peaks as they
were. Writes the result's JSON and Markdown in place (or to ``--out``).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from netlens_bench import runner  # noqa: E402
from netlens_bench.markdown import markdown  # noqa: E402
from netlens_bench.report import acceptance, add_ratios  # noqa: E402


def _key(row: dict) -> tuple[str, str]:
    return row["section"], row["label"]


def retime(base: dict, later: dict, why: str) -> dict:
    """``base`` with the configurations ``later`` measured taken from ``later``."""
    if (base["device"], base["quick"]) != (later["device"], later["quick"]):
        raise SystemExit("the two results are of different devices or modes")
    if base["machine"]["versions"] != later["machine"]["versions"]:
        raise SystemExit("the two results were measured with different library versions")
    replaced = {_key(r) for r in later["rows"]}
    rows = copy.deepcopy([r for r in base["rows"] if _key(r) not in replaced] + later["rows"])
    order = {key: i for i, key in enumerate(dict.fromkeys(_key(r) for r in base["rows"]))}
    rows.sort(key=lambda r: order.get(_key(r), len(order)))
    add_ratios(rows)
    labels = {r["label"] for r in later["rows"]}
    errors = [e for e in base["map_errors"] if e["label"] not in labels] + later["map_errors"]
    result = dict(base, rows=rows, map_errors=errors)
    interleaved = bool(base["options"].get("interleave") and later["options"].get("interleave"))
    result["acceptance"] = acceptance(rows, errors, int(base["options"]["side"]), interleaved)
    result["retimed"] = list(base.get("retimed", [])) + [
        {
            "configurations": sorted(f"{section}: {label}" for section, label in replaced),
            "date": later["machine"]["date"],
            "why": why,
        }
    ]
    return result


def maps_again(base: dict, why: str) -> dict:
    """``base`` with every map comparison of its configurations made again."""
    args = argparse.Namespace(**base["options"])
    jobs = runner.plan(args)
    with tempfile.TemporaryDirectory(prefix="netlens-bench-") as folder:
        args.weights = runner.save_weights(args, jobs, folder)
        errors = runner.check_maps(args, jobs)
    result = dict(base, map_errors=errors)
    rows = copy.deepcopy(base["rows"])
    result["acceptance"] = acceptance(rows, errors, int(args.side), bool(args.interleave))
    result["retimed"] = list(base.get("retimed", [])) + [
        {
            "configurations": ["the map comparisons of every configuration"],
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "why": why,
        }
    ]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", type=Path, help="the result to amend (JSON)")
    parser.add_argument("later", type=Path, nargs="?", help="the later run's result (JSON)")
    parser.add_argument(
        "--maps-again", action="store_true", help="compare every configuration's maps again"
    )
    parser.add_argument("--why", required=True, help="why these configurations were measured again")
    parser.add_argument("--out", type=Path, help="folder to write to (default: beside base)")
    args = parser.parse_args()
    base = json.loads(args.base.read_text())
    if args.maps_again == (args.later is not None):
        parser.error("give either a later result or --maps-again")
    if args.maps_again:
        result = maps_again(base, args.why)
    else:
        result = retime(base, json.loads(args.later.read_text()), args.why)
    out = args.out or args.base.parent
    out.mkdir(parents=True, exist_ok=True)
    (out / args.base.name).write_text(json.dumps(result, indent=2) + "\n")
    (out / args.base.with_suffix(".md").name).write_text(markdown(result) + "\n")
    print(f"wrote {out / args.base.name} and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
