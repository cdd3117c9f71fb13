"""Interruptions and faults: kill -9 after N finished cells then --resume; one writer under OUT;
an out directory that cannot be written; a diverging model, a raising attack and --cell-timeout.

Decision on temp files: a kill can leave hidden ``.NAME.XXXX.tmp`` files of atomic writes cut
short. They never match ``*.json``, so resume ignores them, and ``--resume`` deletes them before
it starts (it holds the out directory's lock, so no live run is writing them).
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from benchmark.results.records import RECORD_SCHEMA, read_results
from tests.conftest import ROOT, TINY, run_cli

SUITE = ROOT / "tests" / "data" / "tiny_suite.yaml"


def planned_cells(*flags):
    """Cell ids of the tiny suite as the CLI plans them with these flags (--seeds only)."""
    from benchmark.plan import plan
    from benchmark.spec import load_suite
    suite = load_suite(str(SUITE))
    if "--seeds" in flags:
        suite.seeds = int(flags[flags.index("--seeds") + 1])
    return [cid for job in plan(suite) for cid, *_ in job.cells()]


def start(out: Path, flags, resume: bool, log: Path):
    command = [sys.executable, "-m", "benchmark.run", "--suite", str(SUITE), "--out", str(out),
               "--workers", "2", "--quiet", *flags] + (["--resume"] if resume else [])
    with open(log, "a") as fh:   # a session of its own: killpg reaches the pool workers too
        return subprocess.Popen(command, cwd=ROOT, stdout=fh, stderr=fh, start_new_session=True)


def assert_whole(out: Path) -> None:
    """Every file a reader would pick up is complete: JSON parses, cells validate and sit in
    their own file, results.json validates. Only hidden temp files may be partial."""
    from benchmark.cells import cell_filename
    for path in out.rglob("*"):
        if path.is_dir() or path.name.endswith(".tmp"):
            continue
        assert not path.name.startswith("."), f"unexpected hidden file {path}"
        if path.suffix == ".json":
            document = json.loads(path.read_text())
            if path.parent.name == "cells":
                jsonschema.validate(document, RECORD_SCHEMA)
                assert path.name == cell_filename(document["cell_id"])
            elif path.name == "settings.json":
                assert {"dataset", "training", "model_params", "targets"} <= set(document)
            else:
                read_results(path)


def finished_cells(out: Path) -> int:
    folder = out / "cells"
    return len(list(folder.glob("*.json"))) if folder.is_dir() else 0


def wait_for_cells(proc, out: Path, count: int, timeout: float = 600) -> bool:
    """True once ``out/cells`` holds ``count`` finished cells while ``proc`` runs; False if it
    ends first (its exit code must then be 0)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if finished_cells(out) >= count:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    raise AssertionError(f"fewer than {count} cells after {timeout} s")


def kill_and_resume(out: Path, flags, kills: int, seed: int, tmp_path: Path):
    """Start, SIGKILL the process group once the cells folder holds a seeded number of finished
    cells (more than the last kill left), check, resume; until ``kills`` kills are done (runs
    that finish first do not count); then finish with --resume."""
    rng, log, done, runs = random.Random(seed), tmp_path / "runs.log", 0, 0
    total = len(planned_cells(*flags))
    while done < kills:
        runs += 1
        assert runs <= 4 * kills, f"only {done} kills in {runs} runs: see {log}"
        have = finished_cells(out)
        proc = start(out, flags, resume=runs > 1, log=log)
        if wait_for_cells(proc, out, rng.randint(have + 1, max(have + 1, total - 1))):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            done += 1
        else:
            assert proc.wait() == 0, log.read_text()[-3000:]
        assert_whole(out)
    # Leftovers a kill can make, and a cell file damaged some other way: resume copes with both.
    cells = out / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    (cells / ".tiny__BPR__clean.json.k2j3h4.tmp").write_text('{"cell_id": "half')
    from benchmark.cells import cell_filename
    (cells / cell_filename(planned_cells(*flags)[0])).write_text('{"cell_id": "trunc')
    final = start(out, flags, resume=True, log=log)
    assert final.wait(timeout=900) == 0, log.read_text()[-3000:]
    return runs


def assert_every_cell_once(out: Path, flags) -> list:
    from benchmark.cells import cell_filename
    expected = planned_cells(*flags)
    records = read_results(out / "results.json")["records"]
    ids = [r["cell_id"] for r in records]
    assert sorted(ids) == sorted(expected) and len(set(ids)) == len(ids)
    assert sorted(p.name for p in (out / "cells").iterdir()) == sorted(map(cell_filename, expected))
    assert not [p for p in out.rglob("*") if p.name.startswith(".")], "temp files left behind"
    assert_whole(out)
    assert all(r["status"] in ("ok", "not_applicable") for r in records)
    return records


def test_kill_9_then_resume_fast(tmp_path):
    """Two SIGKILLs of the whole process group after seeded numbers of finished cells, one seed."""
    out, flags = tmp_path / "out", ("--seeds", "1")
    kill_and_resume(out, flags, kills=2, seed=7, tmp_path=tmp_path)
    assert_every_cell_once(out, flags)


@pytest.mark.slow
def test_kill_9_ten_times_then_resume_matches_an_uninterrupted_run(tmp_path):
    out = tmp_path / "out"
    kill_and_resume(out, (), kills=10, seed=2024, tmp_path=tmp_path)
    records = assert_every_cell_once(out, ())
    clean = tmp_path / "clean"
    proc = run_cli("benchmark.run", "--suite", SUITE, "--out", clean, "--workers", "2", "--quiet")
    assert proc.returncode == 0, proc.stderr
    reference = {r["cell_id"]: r["metrics"] for r in read_results(clean / "results.json")["records"]}
    assert {r["cell_id"]: r["metrics"] for r in records} == reference


AUDIT = """import os, sys
out, log = os.environ["AUDIT_OUT"], os.environ["AUDIT_LOG"]
WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        path, mode, flags = os.fsdecode(args[0]), args[1] or "", args[2] or 0
        writes = any(c in mode for c in "wax+") or flags & WRITES
    elif event in ("os.rename", "os.replace"):
        path, writes = os.fsdecode(args[1]), True
    else:
        return
    if writes and os.path.abspath(path).startswith(out):
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()} {path}\\n")


sys.addaudithook(hook)
"""


def test_only_the_main_process_writes_under_out(tmp_path):
    """Every write under OUT during a 2-worker run, recorded by an audit hook in every process
    (a ``sitecustomize`` on PYTHONPATH reaches the spawned pool workers too), comes from the
    process that was started: workers return records and never touch OUT."""
    hooks, out, log = tmp_path / "hooks", tmp_path / "out", tmp_path / "writes.log"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(AUDIT)
    env = {**os.environ, "PYTHONPATH": str(hooks), "AUDIT_OUT": str(out), "AUDIT_LOG": str(log)}
    proc = subprocess.run([sys.executable, "-m", "benchmark.run", "--suite", str(SUITE), "--out", str(out),
                           "--workers", "2", "--seeds", "1", "--quiet"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    writers = {}
    for line in log.read_text().splitlines():
        pid, path = line.split(" ", 1)
        writers.setdefault(pid, []).append(path)
    assert len(writers) == 1, {pid: paths[:3] for pid, paths in writers.items()}
    written = next(iter(writers.values()))
    assert any("/cells/" in p for p in written) and any(p.endswith("results.json") for p in written)
    assert len({os.path.basename(p) for p in written if "/cells/" in p and p.endswith(".json")}) == \
        len(planned_cells("--seeds", "1"))


# ---- out directories that cannot take the run ----------------------------------------------

def _can_mount_tmpfs() -> bool:
    if not shutil.which("unshare") or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs root and unshare -m to mount a tiny tmpfs "
                    "(chmod does not stop root, so a read-only or full disk must be a real mount)")
def test_full_disk_and_read_only_out_are_refused_before_any_work(tmp_path):
    """In a private mount namespace: a 64 KiB tmpfs filled to the last byte, then the same
    tmpfs remounted read-only. Each run must stop with one line and exit 2, writing nothing."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    python = f"{sys.executable} -m benchmark.run --suite {SUITE} --dataset {TINY} --quiet"
    script = f"""
        mount -t tmpfs -o size=64k tmpfs {mnt}
        dd if=/dev/zero of={mnt}/fill bs=4k 2>/dev/null
        {python} --out {mnt}/full; echo "exit=$?"; ls -A {mnt}
        rm {mnt}/fill; mount -o remount,ro {mnt}
        {python} --out {mnt}/ro; echo "exit=$?"; ls -A {mnt}
    """
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    errors = proc.stderr.strip().splitlines()
    assert proc.stdout.split() == ["exit=2", "fill", "exit=2"], (proc.stdout, proc.stderr)
    assert len(errors) == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "No space left on device" in errors[0] or "KiB free" in errors[0], errors[0]
    assert "Read-only file system" in errors[1] and "choose a writable directory" in errors[1]


def test_disk_filling_up_during_a_run_keeps_finished_cells_for_resume(tmp_path, monkeypatch, capsys):
    """The third cell write fails with ENOSPC (as on a disk that fills up mid-run): one line,
    exit 2, the two cells written before stay, and --resume finishes the run from them."""
    import errno

    import benchmark.harness as harness
    from benchmark.run import main
    real_write, calls = harness.write_json_atomic, []

    def write_until_full(path, document):
        calls.append(Path(path).parent.name == "cells")
        if sum(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(path, document)

    monkeypatch.setattr(harness, "write_json_atomic", write_until_full)
    out = tmp_path / "out"
    args = ["--suite", str(SUITE), "--dataset", str(TINY), "--out", str(out), "--workers", "1", "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: No space left on device"), err
    assert f"--resume --out {out}" in err[0]
    saved = sorted((out / "cells").glob("*.json"))
    assert len(saved) == 2 and not (out / "results.json").exists()
    kept = {p.name: p.read_bytes() for p in saved}
    monkeypatch.setattr(harness, "write_json_atomic", real_write)
    assert main([*args, "--resume"]) == 0
    records = read_results(out / "results.json")["records"]
    assert len({r["cell_id"] for r in records}) == len(planned_cells()) and all(r["status"] != "failed" for r in records)
    assert all((out / "cells" / name).read_bytes() == data for name, data in kept.items())


def test_a_ray_node_dying_under_the_driver_is_one_line_and_resume_completes(tmp_path, monkeypatch, capsys):
    """A local Ray backend whose raylet "dies" once two cells are on disk (Ray's own
    ``LocalRayletDiedError``, raised where ``ray.get`` raises it when the driver's node is killed;
    the real kill is ``tests/test_ray_cluster.py``): one line, exit 1, no traceback, the cells
    finished before stay, and --resume completes the run from them."""
    ray = pytest.importorskip("ray")
    from benchmark.run import main
    real_get, out = ray.get, tmp_path / "out"

    def get_until_the_node_dies(ref, *args, **kwargs):
        if len(list((out / "cells").glob("*.json"))) >= 2:
            raise ray.exceptions.LocalRayletDiedError()
        return real_get(ref, *args, **kwargs)

    monkeypatch.setattr(ray, "get", get_until_the_node_dies)
    args = ["--suite", str(SUITE), "--dataset", str(TINY), "--out", str(out), "--workers", "1",
            "--backend", "ray", "--quiet"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the Ray node this driver was attached to died"), err
    assert f"--resume --out {out}" in err[0]
    saved = sorted((out / "cells").glob("*.json"))
    assert saved and not (out / "results.json").exists()
    kept = {p.name: p.read_bytes() for p in saved}
    monkeypatch.setattr(ray, "get", real_get)
    assert main([*args, "--resume"]) == 0
    records = read_results(out / "results.json")["records"]
    assert len({r["cell_id"] for r in records}) == len(records) == len(planned_cells())
    assert all((out / "cells" / name).read_bytes() == data for name, data in kept.items())


# ---- faults inside a cell ------------------------------------------------------------------

FAULTS = """\
name: faults
models: [BPR, NeuMF, Pop]
seeds: 1
training: {patience: 100000, batch_size: 256}
model_params:            # per-model RecBole settings: the suite's training sets neither key
  BPR: {learning_rate: 1.0e+30, epochs: 3}    # diverges: the loss turns NaN
  NeuMF: {epochs: 1000000}                    # never ends by itself: --cell-timeout stops it
  Pop: {epochs: 1}
targets: {policy: unpopular, count: 3}
attacks:                 # 37 items share a genre with the targets: the attack raises
  - {name: segment, budgets: [0.1], params: {selected_items: 40}}
"""


def test_diverging_model_raising_attack_and_cell_timeout_fail_their_cells_only(tmp_path):
    """One run on two pool workers: BPR diverges (failed: Diverged), NeuMF exceeds
    --cell-timeout (failed), every segment cell fails with the attack's message, Pop's clean cell
    is ok; exit code 1 and the report lists the failed cells with their reasons. The limit is
    generous (45 s: at 10 s, BPR's three-epoch job, a fresh worker's imports included, reached
    it on a busy machine): only the endless NeuMF job may reach it."""
    (tmp_path / "faults.yaml").write_text(FAULTS)
    out = tmp_path / "out"
    proc = run_cli("benchmark.run", "--suite", tmp_path / "faults.yaml", "--dataset", TINY, "--out", out,
                   "--workers", "2", "--cell-timeout", "45", "--quiet")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "cell(s) failed" in proc.stderr
    records = {(r["model"], r["attack"]["name"] if r["attack"] else "clean"): r
               for r in read_results(out / "results.json")["records"]}
    assert records["Pop", "clean"]["status"] == "ok"
    bpr, neumf = records["BPR", "clean"], records["NeuMF", "clean"]
    assert bpr["status"] == "failed" and bpr["error"].startswith("Diverged: training diverged: loss is nan")
    assert neumf["status"] == "failed" and "exceeded --cell-timeout of 45 s" in neumf["error"]
    for model in ("BPR", "NeuMF", "Pop"):
        cell = records[model, "segment"]
        assert cell["status"] == "failed" and "selected_items=40" in cell["error"]
    html = (out / "report.html").read_text()
    for record in records.values():
        if record["status"] == "failed":
            assert record["cell_id"] in html or record["cell_id"].replace("/", "/<wbr>") in html
    assert "exceeded --cell-timeout" in html and "Diverged" in html


def test_cell_timeout_in_the_main_process_and_the_handler_is_restored(tiny_split):
    """--workers 1 runs jobs in the main process: the same SIGALRM limit applies there, a job
    within the limit is untouched, and the previous SIGALRM handler comes back."""
    from benchmark.cells import Job
    from benchmark.harness import _init_worker
    from benchmark.limits import run_limited
    _init_worker()
    common = dict(suite="t", dataset=TINY, rating_threshold=None, seed=0, defense=None, poisoning=None,
                  targets=(("count", 3), ("policy", "unpopular")))
    endless = Job(model="BPR", training=(("epochs", 10 ** 6), ("patience", 10 ** 6)), **common)
    quick = Job(model="Pop", **common)

    def mine(signum, frame):
        raise AssertionError("the old handler must not fire during the job")

    previous = signal.signal(signal.SIGALRM, mine)
    try:
        [slow] = run_limited(endless, timeout=3).records
        assert signal.getsignal(signal.SIGALRM) is mine
        assert slow["status"] == "failed" and "exceeded --cell-timeout of 3 s" in slow["error"]
        assert run_limited(quick, timeout=300).records[0]["status"] == "ok"
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        import torch
        assert torch.is_grad_enabled()   # the stopped job left no half-set torch state behind
    finally:
        signal.signal(signal.SIGALRM, previous)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_sigterm_to_the_driver_alone_stops_its_workers_and_the_run_resumes(tmp_path):
    """``kill PID`` of the driver only (not its process group): exit 130 with the Ctrl-C message,
    no pool worker left running as an orphan, and --resume completes every cell once."""
    out, log = tmp_path / "out", tmp_path / "log"
    flags = ("--seeds", "1")
    run = start(out, flags, resume=False, log=log)
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob("cells/*.json")):   # a cell finished
        time.sleep(0.2)
    workers = _children(run.pid)
    assert workers, log.read_text()[-2000:]
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=120) == 130, log.read_text()[-2000:]
    assert "interrupted" in log.read_text()
    gone = time.monotonic() + 60   # terminated workers exit at once on an idle machine; allow a busy one
    while [w for w in workers if _alive(w)] and time.monotonic() < gone:
        time.sleep(0.2)
    assert not [w for w in workers if _alive(w)]
    assert start(out, flags, resume=True, log=log).wait(timeout=900) == 0, log.read_text()[-3000:]
    assert_every_cell_once(out, flags)
