"""``python -m benchmark.run``: the only argv parser. Runs a suite and writes its results.

Exit codes: 0 every cell ok (or not applicable), 1 some cells failed, 2 bad input or an --out that
cannot be written (also when the disk fills up during the run: finished cells stay saved for
``--resume``), 130 interrupted.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from benchmark.core.errors import BackendLost, BadInput

REPO = Path(__file__).resolve().parent.parent


def _positive(kind):
    """An argparse type: a number of ``kind`` (int or float), finite and > 0."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not 0 < value < math.inf:
            raise argparse.ArgumentTypeError(f"must be a positive {'integer' if kind is int else 'number'}, got {text!r}")
        return value
    return parse


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse would print the usage too)
        print(f"error: {message} (see python -m benchmark.run --help)", file=sys.stderr)
        sys.exit(2)


DATA_FORMATS = """\
data formats (--dataset):
  ml-100k               MovieLens-100K, bundled with RecBole (offline)
  DIR                   a RecBole atomic dataset: DIR/NAME.inter, tab-separated, header
                        user_id:token, item_id:token, optional rating:float, timestamp:float;
                        optional DIR/NAME.item with a class (genres) field
  ratings.dat           MovieLens-1M/10M (user::item::rating::timestamp), movies.dat beside it
  u.data                MovieLens-100K raw (user, item, rating, timestamp; tab), u.item beside it
  FILE.csv / FILE.tsv   a header naming the user column (user_id, userId, user) and the item
                        column (item_id, itemId, movieId, item), optional rating, timestamp;
                        separated by commas, tabs, semicolons or '::' (detected)
  each file may also be given as the directory that holds it; conversions are cached under
  ~/.cache/robrec (ROBREC_CACHE)"""


def parse_args(argv=None):
    from benchmark.spec import available_suites
    p = _Parser(prog="python -m benchmark.run", description=__doc__.replace("``", ""),
                epilog=DATA_FORMATS, formatter_class=argparse.RawDescriptionHelpFormatter,
                allow_abbrev=False)
    p.add_argument("--suite", required=True,
                   help=f"a suite by name ({', '.join(available_suites())}) or a suite FILE.yaml")
    p.add_argument("--dataset", help="ml-100k (bundled, offline), a dataset directory or file: see "
                                     "the data formats below")
    p.add_argument("--rating-threshold", type=float, help="keep interactions with rating >= this")
    p.add_argument("--models", help="comma-separated RecBole general models, e.g. BPR,LightGCN")
    p.add_argument("--seeds", type=int, help="number of seeds (0..N-1)")
    p.add_argument("--epochs", type=int, help="cap on training epochs (overrides the suite)")
    p.add_argument("--workers", type=_positive(int), default=os.cpu_count() or 1,
                   help="parallel workers (default: cores)")
    p.add_argument("--backend", choices=("local", "ray"), default="local")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]",
                   help="where models train and score (default auto: CUDA when present, else the "
                        "CPU); random draws stay on the CPU, so records do not depend on it (checked "
                        "on the CPU only: the GPU path has not yet run on a GPU)")
    p.add_argument("--ray-address", help="join an existing Ray cluster (with --backend ray)")
    p.add_argument("--out", help="output directory (default: runs/SUITE-TIMESTAMP)")
    p.add_argument("--resume", action="store_true", help="continue a run in --out, skipping finished cells")
    p.add_argument("--cell-timeout", type=_positive(float), metavar="SECONDS",
                   help="record a job (one trained model and the cells that share it) as failed when it "
                        "runs longer than this, on any backend; the rest of the suite goes on")
    p.add_argument("--export-poisoned", metavar="DIR",
                   help="also write every poisoned train table made as RecBole atomic files, with the "
                        "fake users, the targets and the attack's settings (DIR/ATTACK/seedK/)")
    p.add_argument("--time-budget", type=_positive(float), metavar="MINUTES",
                   help="start no job after this many minutes: running jobs finish, the results and "
                        "the report cover the cells done (the grid runs its most informative cells "
                        "first), and --resume continues")
    p.add_argument("--report-every", type=float, default=5.0, metavar="MINUTES",
                   help="rewrite results.json and report.html from the cells done at most this often "
                        "while the run goes on (default 5; 0: after every job)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary table")
    p.add_argument("--verbose", action="store_true", help="print every finished cell")
    return p.parse_args(argv)


def environment() -> dict:
    import numpy
    import pandas
    import recbole
    import torch
    return {"python": platform.python_version(), "torch": torch.__version__, "recbole": recbole.__version__,
            "numpy": numpy.__version__, "pandas": pandas.__version__, "platform": platform.platform(),
            "machine": platform.machine(), "cpus": os.cpu_count()}


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    with _interruptible():
        return _main(argv)


@contextmanager
def _interruptible():
    """SIGINT and SIGTERM raise KeyboardInterrupt while the run lives, whatever the handlers it
    inherited: a shell starts background jobs with SIGINT ignored, and ``kill`` (a scheduler's
    stop) sends SIGTERM; finished cells stay saved, exit code 130. The handlers before are put
    back after (``main`` also runs inside other programs, e.g. tests)."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _main(argv) -> int:
    args = parse_args(argv)
    args.argv = argv
    warnings.filterwarnings("ignore")
    try:
        planned = plan_run(args)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted before any cell ran", file=sys.stderr)
        return 130
    return run_planned(args, planned)


@dataclass
class Planned:
    """A run checked and ready: the suite, its dataset, the out folder (locked) and the jobs."""
    suite: object
    dataset: object
    out: Path
    jobs: list
    lock: object


def plan_run(args, document=None) -> Planned:
    """Everything before the first cell (BadInput when something cannot run): the suite (of
    ``document``, else of ``args.suite``), its dataset, the jobs, and the out folder checked,
    locked and matched with its settings."""
    from benchmark.checks import configure
    suite, dataset = configure(args, document)
    out = Path(args.out) if args.out else REPO / "runs" / f"{suite.name}-{datetime.now():%Y%m%d-%H%M%S}"
    from benchmark.outdir import check_settings, prepare_out
    from benchmark.plan import plan
    jobs = plan(suite, device=args.device)
    lock = prepare_out(out, args.resume)
    try:
        check_settings(out, suite)
    except BadInput:
        lock.release()
        raise
    return Planned(suite, dataset, out, jobs, lock)


def run_planned(args, planned: Planned) -> int:
    """Run the planned cells, write the results and the report; the exit code (0, 1, 2, 130)."""
    try:
        return _run(args, planned.suite, planned.dataset, planned.out, planned.jobs)
    except BackendLost as exc:
        print(f"error: {exc}: the cells finished before are saved; rerun with --resume --out {planned.out} "
              f"(once the cluster has marked the node dead)", file=sys.stderr)
        return 1
    except OSError as exc:   # e.g. the disk filled up or went read-only during the run
        print(f"error: {exc.strerror or exc} ({exc.filename or planned.out}): the cells finished before "
              f"are saved; free some space or fix the folder, then rerun with --resume --out {planned.out}",
              file=sys.stderr)
        return 2
    finally:
        planned.lock.release()


def _run(args, suite, dataset, out: Path, jobs) -> int:
    from benchmark.harness import execute
    from benchmark.outdir import load_cells
    from benchmark.progress import CostProgress
    n_cells = sum(len(job.cells()) for job in jobs)
    started, t0 = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.perf_counter()
    progress = CostProgress(jobs, args.workers, show=not args.quiet,
                            title=f"suite {suite.name} on {suite.dataset}, backend {args.backend}, writing to {out}: ")
    finished = {cid: r for cid, r in load_cells(out).items() if r["status"] != "failed"}
    interim = Interim(args, suite, dataset, out, started, t0, n_cells)

    def on_done(job, records, skipped=()):
        if skipped:
            progress.skipped(skipped)
            return
        progress.done(job, records)
        finished.update((r["cell_id"], r) for r in records)
        interim.maybe_write(finished)
        if args.verbose:
            for r in records:
                progress.write(f"{r['status']:>14}  {r['cell_id']}  ndcg@10="
                               f"{r['metrics'].get('ndcg@10', float('nan')):.4f}")

    if args.resume:
        found = finished_cells(out, jobs)
        print(f"resume: {found} of {n_cells} cells already finished in {out}: skipping them, running "
              f"the other {n_cells - found}", file=sys.stderr)
    try:
        deadline = time.monotonic() + 60 * args.time_budget if args.time_budget else None
        records = execute(jobs, out, workers=args.workers, backend=args.backend,
                          ray_address=args.ray_address, on_done=on_done, cell_timeout=args.cell_timeout,
                          export_poisoned=Path(args.export_poisoned) if args.export_poisoned else None,
                          deadline=deadline)
    except KeyboardInterrupt:
        progress.close()
        found = finished_cells(out, jobs)
        saved = f"{found} of {n_cells} cells finished and saved in {out}" if found else \
            f"no cell had finished ({n_cells} planned), nothing to keep in {out}"
        print(f"\ninterrupted: {saved}; rerun with --resume --out {out}", file=sys.stderr)
        return 130
    finally:
        progress.close()
    from benchmark.results.write import write_results
    from reports.build import build_report
    try:
        document = write_results(out, _run_meta(args, suite, dataset, started, t0, n_cells, len(records)), records)
    except KeyboardInterrupt:
        print(f"\ninterrupted while writing the results: all {n_cells} cells are saved in {out}; "
              f"rerun with --resume --out {out} to write them", file=sys.stderr)
        return 130
    try:
        build_report(out, document)
    except KeyboardInterrupt:
        print(f"\ninterrupted while writing the report: the results are in {out / 'results.json'}; "
              f"write the report with python -m reports.build {out}", file=sys.stderr)
        return 130
    if not args.quiet:
        print_summary(document, out)
    print(f"results: {out / 'results.json'}")
    if args.time_budget and len(records) < n_cells:
        print(f"time budget of {args.time_budget:g} min spent: {len(records)} of {n_cells} cells ran (the "
              f"report covers them); rerun with --resume --out {out} to continue", file=sys.stderr)
    failed = [r for r in records if r["status"] == "failed"]
    if failed:
        print(f"{len(failed)} cell(s) failed, e.g. {failed[0]['cell_id']}: {failed[0]['error']}", file=sys.stderr)
        return 1
    return 0


def finished_cells(out: Path, jobs) -> int:
    """How many of the jobs' cells are finished on disk (failed ones are run again)."""
    from benchmark.outdir import load_cells
    done = load_cells(out)
    return sum(1 for job in jobs for cid, *_ in job.cells()
               if cid in done and done[cid]["status"] != "failed")


class Interim:
    """``results.json`` and ``report.html`` rewritten from the cells done while the run goes on,
    at most every ``--report-every`` minutes (atomically, as the final ones); a failure to write
    them is said once and never stops the run."""

    def __init__(self, args, suite, dataset, out: Path, started: str, t0: float, n_cells: int):
        self.args, self.suite, self.dataset, self.out = args, suite, dataset, out
        self.started, self.t0, self.n_cells = started, t0, n_cells
        self.every_s, self.last, self.failed = 60 * max(args.report_every, 0.0), time.monotonic(), False

    def maybe_write(self, finished: dict) -> None:
        if self.failed or len(finished) >= self.n_cells or time.monotonic() - self.last < self.every_s:
            return
        from benchmark.results.write import write_results
        from reports.build import build_report
        try:
            meta = _run_meta(self.args, self.suite, self.dataset, self.started, self.t0, self.n_cells, len(finished))
            build_report(self.out, write_results(self.out, meta, list(finished.values())))
        except Exception as exc:   # the cells are saved; the final report is written at the end
            self.failed = True
            print(f"note: could not write the interim report ({type(exc).__name__}: {exc}); the run goes on",
                  file=sys.stderr)
        self.last = time.monotonic()


def _run_meta(args, suite, dataset, started: str, t0: float, n_cells: int, n_done: int) -> dict:
    """The ``run`` block of results.json: what ran, where, on what, and how much of the grid
    (``cells_done`` of ``cells_planned``)."""
    run_meta = {"suite": suite.name, "description": suite.description, "dataset": suite.dataset,
                "dataset_stats": dataset.stats(), "models": suite.models,
                "seeds": list(range(suite.seeds)), "noise_floor": suite.noise_floor, "targets": suite.targets,
                "target_items": _target_items(suite, dataset), "training": suite.training,
                "started": started, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "wall_s": time.perf_counter() - t0, "workers": args.workers, "backend": args.backend,
                "device": args.device,
                "environment": environment(), "commit": git_commit(), "argv": list(args.argv),
                "cells_planned": n_cells, "cells_done": n_done}
    return run_meta


def _target_items(suite, dataset) -> dict:
    """Per seed, the promoted target items by raw token with their titles (untrusted text)."""
    from benchmark.core.kinds import PROFILE_FAMILIES
    if not any(a.family in PROFILE_FAMILIES for a in suite.attacks):
        return {}
    from benchmark.shared import seed_targets
    out = {}
    for seed in range(suite.seeds):
        items = seed_targets(suite.dataset, suite.rating_threshold, seed, suite.targets["policy"],
                             int(suite.targets["count"]))
        out[str(seed)] = [{"token": str(dataset.item_tokens[i]),
                           "title": dataset.item_titles[i] if dataset.item_titles else ""} for i in items]
    return out


def print_summary(document: dict, out: Path) -> None:
    """The leaderboard (``benchmark.results.leaderboard``) and where the full results are."""
    from benchmark.results.leaderboard import leaderboards, text_table
    boards = leaderboards(document["summary"])
    for title, board in boards:
        print("\n" + (f"{title}\n" if len(boards) > 1 or "Next" in title else "") + text_table(board))
    counts: dict = {}
    for record in document["records"]:
        counts[record["status"]] = counts.get(record["status"], 0) + 1
    print(f"\n{len(document['records'])} cells ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))}); "
          f"every cell and plot: {out / 'report.html'}")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
