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
    validated once, and its dataset; BadInput for anything that cannot run, before any work.
    What needs no torch, RecBole or Ray (``precheck``) is checked first, so a refusal is quick."""
    from benchmark.spec import parse_suite, read_suite
    document, where = (document, "suite document") if document is not None else read_suite(args.suite)
    document = with_flags(document, args)
    dataset = precheck(args, document, where)
    from benchmark.core.data import split_dataset
    from benchmark.core.models import model_class
    suite = parse_suite(document, where, FLAGS)
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
    split = split_dataset(dataset, 0)  # fails early on data that cannot be split
    check_against_data(suite, split)
    return suite, dataset


def precheck(args, document, where: str):
    """The checks that need no heavy import (torch, RecBole, Ray), made before them so that a
    refusal takes a moment: the suite's structure, --ray-address, --export-poisoned, model names,
    and the dataset (loaded with numpy and pandas only; returned, None if the document is not
    a mapping, for ``parse_suite`` to refuse)."""
    if not isinstance(document, dict):
        return None
    from benchmark.core.model_names import check_model_name
    from benchmark.spec import check_suite_document
    check_suite_document(document, where, FLAGS)
    check_ray_address(args)
    check_export_folder(args)
    models = document.get("models") or []
    for name in [m.strip() for m in models.split(",") if m.strip()] if isinstance(models, str) else models:
        check_model_name(name)   # an empty list or a name given twice: parse_suite says so
    for name in document.get("model_params") or {}:
        try:
            check_model_name(name)
        except BadInput as exc:
            raise BadInput(f"model_params: {exc}") from None
    from benchmark.core.data import EMBEDDED, load_dataset
    return load_dataset(str(document.get("dataset", EMBEDDED)), document.get("rating_threshold"))


RAY_SPECIAL = ("auto", "local")


def parse_ray_address(address: str) -> tuple[str, int] | None:
    """(host, port) of ``[ray://]HOST:PORT``, None for ``auto`` / ``local``; BadInput otherwise."""
    if address in RAY_SPECIAL:
        return None
    rest = address.removeprefix("ray://")
    host, _, port = rest.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    valid_host = bool(host) and all(c.isalnum() or c in "-._:" for c in host) and \
        (":" not in host or rest.startswith("["))
    if not (valid_host and port.isdigit() and 0 < int(port) < 65536):
        raise BadInput(f"--ray-address {address!r} is not an address: write HOST:PORT (e.g. "
                       f"127.0.0.1:6379, the address 'ray start --head' prints), ray://HOST:PORT, "
                       f"{' or '.join(RAY_SPECIAL)}")
    return host, int(port)


def check_ray_address(args, wait_s: float = 3.0) -> None:
    """--ray-address: well formed, used with --backend ray, and something listening there
    (a TCP connect of at most ``wait_s`` seconds: Ray itself would wait and log for a minute)."""
    if not args.ray_address:
        return
    if args.backend != "ray":
        raise BadInput("--ray-address joins a Ray cluster: add --backend ray")
    where = parse_ray_address(args.ray_address)
    if where is None:
        return
    import socket
    try:
        socket.create_connection(where, timeout=wait_s).close()
    except OSError as exc:
        why = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise BadInput(f"--ray-address {args.ray_address}: nothing answers there ({why}): start the "
                       f"cluster (ray start --head) or pass the address it printed") from None


def check_export_folder(args) -> None:
    """--export-poisoned: a new (or, with --resume, earlier) folder this run can write; made for
    the check and removed again, so that a refusal leaves nothing behind."""
    if not args.export_poisoned:
        return
    export = Path(args.export_poisoned)
    if export.is_file() or (export.is_dir() and any(export.iterdir()) and not args.resume):
        raise BadInput(f"--export-poisoned '{export}' is a file or already holds files: choose a new "
                       f"directory (with --resume, tables made again are written over)")
    made = [p for p in [export, *export.parents] if not p.exists()]
    try:
        export.mkdir(parents=True, exist_ok=True)
        probe = export / ".write-probe.tmp"
        probe.write_bytes(b"0")
        probe.unlink()
    except OSError as exc:
        raise BadInput(f"cannot write to --export-poisoned '{export}' ({exc.strerror or exc}): choose a "
                       f"writable directory") from None
    finally:
        for folder in made:   # deepest first: leave no trace of the check
            try:
                folder.rmdir()
            except OSError:
                pass


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
    suite, dataset = configure(args, document)
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

    if args.resume:
        found = finished_cells(out, jobs)
        print(f"resume: {found} of {n_cells} cells already finished in {out}: skipping them, running "
              f"the other {n_cells - found}", file=sys.stderr)
    try:
        records = execute(jobs, out, workers=args.workers, backend=args.backend,
                          ray_address=args.ray_address, on_done=on_done, cell_timeout=args.cell_timeout,
                          export_poisoned=Path(args.export_poisoned) if args.export_poisoned else None)
    except KeyboardInterrupt:
        if progress is not None:
            progress.close()
            progress = None
        found = finished_cells(out, jobs)
        saved = f"{found} of {n_cells} cells finished and saved in {out}" if found else \
            f"no cell had finished ({n_cells} planned), nothing to keep in {out}"
        print(f"\ninterrupted: {saved}; rerun with --resume --out {out}", file=sys.stderr)
        return 130
    finally:
        if progress is not None:
            progress.close()
    from benchmark.results.write import write_results
    from reports.build import build_report
    try:
        document = write_results(out, _run_meta(args, suite, dataset, started, t0), records)
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


def _run_meta(args, suite, dataset, started: str, t0: float) -> dict:
    """The ``run`` block of results.json: what ran, where, on what."""
    run_meta = {"suite": suite.name, "description": suite.description, "dataset": suite.dataset,
                "dataset_stats": dataset.stats(), "models": suite.models,
                "seeds": list(range(suite.seeds)), "noise_floor": suite.noise_floor, "targets": suite.targets,
                "target_items": _target_items(suite, dataset), "training": suite.training,
                "started": started, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "wall_s": time.perf_counter() - t0, "workers": args.workers, "backend": args.backend,
                "environment": environment(), "commit": git_commit(), "argv": list(args.argv)}
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
    sys.exit(main())
