r"""Writes the report of one or more work dirs: the standard figures as PNG and one HTML page.

  python -m scripts.report WORKDIR [WORKDIR ...] [--out DIR]

No Jupyter needed. A WORKDIR is a work dir of any launcher (``scripts.train_atari``,
``scripts.train_minatar``, ``scripts.train_continual``; the variants of a continual sweep are
curves of its one work dir), its metrics.jsonl, or a directory holding per-variant work dirs (an
RL launch with variants writes ``<workdir>/<variant>``, and Atari seeds ``.../seed_<s>``, which
are read as one run). Several WORKDIRs are compared side by side, one colour per curve in every
figure.

``--out`` (default ``<first WORKDIR>/report``) receives ``<figure>.png`` for every figure with
data and ``report.html``: the figures (embedded, so the page is self-contained, and linked to
the PNGs next to it), the evaluation matrix of RL runs, the config fields that differ between
the curves and every launch's ``run_info.json`` (`benchmarks.report`). The diagnostics notebook
(``notebooks/plasticity_diagnostics.ipynb``) draws the same figures.

Exit status 0 when the report is written; 1 with one line ``report: error: ...`` for a missing
or invalid work dir or bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

NAME = "report"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit status 1, as every launcher's bad input
        raise ValueError(message)


def parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = _Parser(
        prog=f"python -m scripts.{NAME}",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[2:]),
    )
    parser.add_argument("workdirs", nargs="+", metavar="WORKDIR", help="work dirs to compare")
    parser.add_argument("--out", default=None, help="output dir (default <first WORKDIR>/report)")
    parser.add_argument("--dpi", type=int, default=90, help="PNG resolution (default 90)")
    args = parser.parse_args(list(argv))
    # A leading '~' the shell left as it is (--out=~/x, a quoted path) is the home directory.
    args.workdirs = [os.path.expanduser(path) for path in args.workdirs]
    args.out = None if args.out is None else os.path.expanduser(args.out)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the report command; ``argv`` starts with the program name, as ``sys.argv``."""
    argv = list(sys.argv if argv is None else argv)
    try:
        args = parse(argv[1:])
    except SystemExit as done:  # --help
        return int(done.code or 0)
    except ValueError as error:
        print(f"{NAME}: error: {error} (see --help)", file=sys.stderr)
        return 1
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")  # files only, whatever the display
    from benchmarks import report  # noqa: PLC0415

    try:
        written = report.write_report(args.workdirs, args.out, dpi=args.dpi)
    except ValueError as error:
        print(f"{NAME}: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # --out names a file, or a place this user may not write
        where = f" ({error.filename})" if error.filename else ""
        print(f"{NAME}: error: cannot write the report: {error.strerror}{where}", file=sys.stderr)
        return 1
    curves = sum(len(report.analysis.variants(run)) for run in written.runs)
    print(
        f"{NAME}: {len(written.figures)} figures of {len(written.runs)} run(s), {curves} curve(s) "
        f"in {written.page.parent}"
    )
    if written.missing:
        print(f"{NAME}: no data for {', '.join(written.missing)}")
    print(f"{NAME}: open {written.page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
