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


def parse_args(argv=None):
    p = _Parser(prog="python -m benchmark.run", description=__doc__)
    p.add_argument("--suite", required=True, help="smoke, clean, noise, shilling, gradient, defenses, all, or FILE.yaml")
    p.add_argument("--dataset", help="ml-100k (bundled, offline) or a directory of RecBole atomic files")
    p.add_argument("--rating-threshold", type=float, help="keep interactions with rating >= this")
    p.add_argument("--models", help="comma-separated RecBole general models, e.g. BPR,LightGCN")
    p.add_argument("--seeds", type=int, help="number of seeds (0..N-1)")
    p.add_argument("--epochs", type=int, help="cap on training epochs (overrides the suite)")
    p.add_argument("--workers", type=_positive(int), default=os.cpu_count() or 1,
                   help="parallel workers (default: cores)")
    p.add_argument("--backend", choices=("local", "ray"), default="local")
    p.add_argument("--ray-address", help="join an existing Ray cluster (with --backend ray)")
    p.add_argument("--out", help="output directory (default: runs/SUITE-TIMESTAMP)")
    p.add_argument("--resume", action="store_true", help="continue a run in --out, skipping finished cells")
    p.add_argument("--cell-timeout", type=_positive(float), metavar="SECONDS",
                   help="record a job (one trained model and the cells that share it) as failed when it "
                        "runs longer than this, on any backend; the rest of the suite goes on")
    p.add_argument("--export-poisoned", metavar="DIR",
                   help="also write every poisoned train table made as RecBole atomic files, with the "
                        "fake users, the targets and the attack's settings (DIR/ATTACK/seedK/)")
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


# suite keys a flag sets: the flag overrides the file, and a message about the key names the flag
FLAGS = {"dataset": "--dataset", "rating_threshold": "--rating-threshold", "models": "--models",
         "seeds": "--seeds", "training: epochs": "--epochs"}


def with_flags(document, args):
    """The suite document with the command-line flags applied (``FLAGS``); validated once, after."""
    if not isinstance(document, dict):
        return document          # parse_suite says what is wrong with it
    document = dict(document)
    values = {"dataset": args.dataset, "rating_threshold": args.rating_threshold, "models": args.models,
              "seeds": args.seeds}
    document.update({key: value for key, value in values.items() if value is not None})
    if args.epochs is not None:
        document["training"] = {**(document.get("training") or {}), "epochs": args.epochs}
    return document


def configure(args, document=None):
    """The suite (``document``, else the one ``args.suite`` names) with the flags applied and
    validated once, and its dataset; BadInput for anything that cannot run, before any work."""
    from benchmark.core.data import load_dataset, split_dataset
    from benchmark.core.models import model_class
    from benchmark.spec import parse_suite, read_suite
    document, where = (document, "suite document") if document is not None else read_suite(args.suite)
    suite = parse_suite(with_flags(document, args), where, FLAGS)
    if args.backend == "ray" and Path(suite.dataset).exists():
        # Ray workers resolve paths in their own working directory, on their own machine
        suite.dataset = str(Path(suite.dataset).resolve())
    for name in suite.models:
        model_class(name)
    for name in suite.model_params:
        try:
            model_class(name)  # a misspelled model in model_params would be silently ignored
        except BadInput as exc:
            raise BadInput(f"model_params: {exc}") from None
    dataset = load_dataset(suite.dataset, suite.rating_threshold)
    split = split_dataset(dataset, 0)  # fails early on data that cannot be split
    check_against_data(suite, split)
    return suite, dataset


def check_against_data(suite, split) -> None:
    """Settings this dataset cannot meet, refused before any work (BadInput).

    The target items must be drawable (checked on seed 0's split), and a fake profile holds each
    item at most once: ``filler_items + selected_items + targets <= items``. What depends on a
    seed's train table (rated items left for fillers, items sharing the targets' genre) is
    checked by the attack itself when it runs, and fails that cell with the attack's message.
    """
    from benchmark.core.models import size_problem
    from benchmark.core.targets import choose_targets
    for model in suite.models:
        settings = {"train_batch_size": suite.training.get("batch_size", 2048), **suite.model_params.get(model, {})}
        problem = size_problem(model, settings,
                               split.dataset.n_users, split.dataset.n_items, len(split.train))
        if problem:
            raise BadInput(problem)
    try:
        choose_targets(split.train, suite.targets["policy"], suite.targets["count"], 0)
    except ValueError as exc:
        raise BadInput(f"targets: {exc}") from None
    n_items = split.train.n_items
    for spec in suite.attacks:
        profile = {k: spec.params[k] for k in ("filler_items", "selected_items") if spec.params.get(k)}
        if profile and sum(profile.values()) + suite.targets["count"] > n_items:
            parts = " + ".join(f"{k}={v}" for k, v in profile.items())
            raise BadInput(f"attack {spec.label}: {parts} + {suite.targets['count']} targets exceeds the "
                           f"{n_items} items of {suite.dataset}: lower {', '.join(profile)}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
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
    suite, dataset = configure(args, document)
    export = Path(args.export_poisoned) if args.export_poisoned else None
    if export is not None and (export.is_file() or (export.is_dir() and any(export.iterdir()) and not args.resume)):
        raise BadInput(f"--export-poisoned '{export}' is a file or already holds files: choose a new "
                       f"directory (with --resume, tables made again are written over)")
    out = Path(args.out) if args.out else REPO / "runs" / f"{suite.name}-{datetime.now():%Y%m%d-%H%M%S}"
    from benchmark.outdir import check_settings, prepare_out
    from benchmark.plan import plan
    jobs = plan(suite)
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
    from benchmark.progress import CostProgress
    n_cells = sum(len(job.cells()) for job in jobs)
    started, t0 = datetime.now(timezone.utc).isoformat(timespec="seconds"), time.perf_counter()
    if not args.quiet:
        print(f"suite {suite.name}: {n_cells} cells in {len(jobs)} jobs on {suite.dataset}, "
              f"{args.workers} worker(s), backend {args.backend}; writing to {out}", file=sys.stderr)
    progress = None if args.quiet else CostProgress(jobs)

    def on_done(job, records, skipped=()):
        if progress is None:
            return
        if skipped:
            progress.skipped(skipped)
            return
        progress.done(job, records)
        if args.verbose:
            for r in records:
                progress.write(f"{r['status']:>14}  {r['cell_id']}  ndcg@10="
                               f"{r['metrics'].get('ndcg@10', float('nan')):.4f}")

    try:
        records = execute(jobs, out, workers=args.workers, backend=args.backend,
                          ray_address=args.ray_address, on_done=on_done, cell_timeout=args.cell_timeout,
                          export_poisoned=Path(args.export_poisoned) if args.export_poisoned else None)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished cells are saved in {out}; rerun with --resume --out {out}",
              file=sys.stderr)
        return 130
    finally:
        if progress is not None:
            progress.close()
    run_meta = {"suite": suite.name, "description": suite.description, "dataset": suite.dataset,
                "dataset_stats": dataset.stats(), "models": suite.models,
                "seeds": list(range(suite.seeds)), "targets": suite.targets,
                "target_items": _target_items(suite, dataset), "training": suite.training,
                "started": started, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "wall_s": time.perf_counter() - t0, "workers": args.workers, "backend": args.backend,
                "environment": environment(), "commit": git_commit(), "argv": list(args.argv)}
    from benchmark.results.write import write_results
    from reports.build import build_report
    document = write_results(out, run_meta, records)
    build_report(out, document)
    if not args.quiet:
        print_summary(document, out)
    print(f"results: {out / 'results.json'}")
    failed = [r for r in records if r["status"] == "failed"]
    if failed:
        print(f"{len(failed)} cell(s) failed, e.g. {failed[0]['cell_id']}: {failed[0]['error']}", file=sys.stderr)
        return 1
    return 0


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
    from benchmark.results.leaderboard import leaderboard, text_table
    board = leaderboard(document["summary"])
    if board:
        print("\n" + text_table(board))
    counts: dict = {}
    for record in document["records"]:
        counts[record["status"]] = counts.get(record["status"], 0) + 1
    print(f"\n{len(document['records'])} cells ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))}); "
          f"every cell and plot: {out / 'report.html'}")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    import signal
    # SIGTERM (kill, a scheduler's stop) takes Ctrl-C's path: finished cells stay saved, the
    # workers are stopped with the run, exit code 130.
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())
