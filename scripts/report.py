"""Write report.md and PNG figures for a sweep (or one run) directory.

    python scripts/report.py outputs/multirun/<date>/<time>
    python scripts/report.py outputs/runs/<date>/<time>
"""

import argparse

from initlab.report import collect_runs, write_report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("path", help="a sweep directory (outputs/multirun/...) or one run")
    args = parser.parse_args(argv)
    runs = collect_runs(args.path)
    print(f"{len(runs)} run(s); wrote {write_report(args.path, runs)}")


if __name__ == "__main__":
    main()
