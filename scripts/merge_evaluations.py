"""Join evaluation runs that share one protocol into one table (reports/evaluation.*).

    python scripts/merge_evaluations.py BASE_DIR OTHER_DIR[=NOTE] ... --out reports

BASE_DIR's presets, reconstructions and inpainting are kept; each OTHER_DIR adds the presets BASE
lacks, marked † with NOTE (default: the folder's name) in the Markdown. Runs that differ in
classes, chains, steps, seed, batch or networks are refused (`ppgn_core.evaluate.merge_reports`).
Sheets (`sheet_<preset>.png`) are copied beside the merged report.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ppgn_core.evaluate import merge_reports, write_markdown  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("base", type=Path)
    ap.add_argument("others", nargs="+", help="DIR or DIR=NOTE")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    report = json.loads((args.base / "evaluation.json").read_text())
    sheets = {p: args.base / f"sheet_{p}.png" for p in report["presets"]}
    for item in args.others:
        folder, _, note = item.partition("=")
        other = json.loads((Path(folder) / "evaluation.json").read_text())
        try:
            report = merge_reports(report, other, note or Path(folder).name)
        except ValueError as e:
            ap.error(f"{folder}: {e}")
        sheets.update({p: Path(folder) / f"sheet_{p}.png" for p in other["presets"] if p not in sheets})
    args.out.mkdir(parents=True, exist_ok=True)
    for p, src in sheets.items():
        if src.exists() and src.resolve() != (args.out / src.name).resolve():
            shutil.copyfile(src, args.out / src.name)
    (args.out / "evaluation.json").write_text(json.dumps(report, indent=2))
    write_markdown(report, args.out / "evaluation.md")
    print((args.out / "evaluation.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
