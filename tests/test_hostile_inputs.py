"""Hostile and broken input: each case gives one line on stderr naming the problem and the fix,
exit code 2, no traceback, and nothing under --out is created or overwritten.

This file adds the cases that tests/test_data.py, tests/test_cli.py, tests/test_compare.py and
tests/test_reports.py do not already cover. Most cases call ``benchmark.run.main`` in this
process (the same code ``python -m benchmark.run`` runs; a subprocess per case would cost ~5 s of
imports each); ``test_real_cli_*`` run a few of them through a real ``python -m`` subprocess.
"""
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from benchmark.core.data import load_dataset
from tests.conftest import ROOT, TINY, run_cli

SUITE = ROOT / "tests" / "data" / "tiny_suite.yaml"
HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
TINY_ROWS = (ROOT / "tests" / "data" / "tiny" / "tiny.inter").read_text().splitlines(keepends=True)[1:]
EARLIER = b'{"an earlier run": "must survive"}\n'


def run_main(args, capsys):
    """``python -m benchmark.run ARGS`` in this process: (exit code, stdout, stderr)."""
    from benchmark.run import main
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:   # argparse errors exit from inside main, as on the command line
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def earlier_run(tmp_path):
    """An --out folder holding an earlier run's file, to check that a refusal leaves it alone."""
    out = tmp_path / "earlier"
    out.mkdir()
    (out / "results.json").write_bytes(EARLIER)
    return out


def assert_refused(code, err, expected, out=None):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for part in ([expected] if isinstance(expected, str) else expected):
        assert part in lines[0], lines[0]
    assert len(lines[0]) < 600, "messages quote values, never whole lines"
    if out is not None:   # nothing created, nothing overwritten
        assert sorted(p.name for p in out.iterdir()) == ["results.json"]
        assert (out / "results.json").read_bytes() == EARLIER


# ---- datasets ------------------------------------------------------------------------------

def _dataset(tmp_path, name, files):
    folder = tmp_path / name
    folder.mkdir()
    for filename, content in files.items():
        path = folder / filename.replace("NAME", name)
        if content is None:
            path.mkdir()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="")
    return folder


def inter(text):
    return {"NAME.inter": text}


DATASETS = {  # case: (files, what the one line must say)
    "header missing (data on the first line)": (
        inter("".join(TINY_ROWS)), ["missing column 'user_id'", "found '1'"]),
    "header mistyped": (
        inter(HEADER.replace("user_id", "userid") + "".join(TINY_ROWS)), ["missing column 'user_id'", "'userid'"]),
    "semicolon separated": (
        inter("user_id:token;item_id:token\n1;2\n"), ["missing column 'item_id'", "tab-separated"]),
    "space separated": (
        inter("user_id:token item_id:token rating:float\n1 2 5\n"), ["separated by ' '", "tab-separated"]),
    "column named twice": (
        inter("user_id:token\titem_id:token\titem_id:token\n1\t2\t3\n"), "column 'item_id' twice"),
    "stray tab in the header": (
        inter("user_id:token\t\titem_id:token\n1\t2\t3\n"), "empty field (a stray tab?)"),
    "infinite rating": (
        inter(HEADER + "1\t2\tinf\t880000000\n"), ["column 'rating'", "non-finite value 'inf'"]),
    "negative infinite rating": (
        inter(HEADER + "1\t2\t-Infinity\t880000000\n"), ["column 'rating'", "row 1"]),
    "non-numeric timestamp": (
        inter(HEADER + "".join(TINY_ROWS[:5]) + "1\t2\t5\tyesterday\n"), ["column 'timestamp'", "'yesterday'", "row 6"]),
    "NaN timestamp": (
        inter(HEADER + "1\t2\t5\tNaN\n"), ["column 'timestamp'", "'NaN'"]),
    "empty user id": (
        inter(HEADER + "".join(TINY_ROWS[:3]) + "\t2\t5\t880000000\n"), ["invalid user_id token ''", "row 4"]),
    "item id with a space": (
        inter(HEADER + "1\tmovie 2\t5\t880000000\n"), ["invalid item_id token 'movie 2'", "no whitespace"]),
    "rows shorter than the header": (
        inter(HEADER + "1\n2\n"), ["header has 4 tab-separated fields but rows have 1", "separator"]),
    "one row shorter than the others": (
        inter(HEADER + "".join(TINY_ROWS[:3]) + "1\n"), ["invalid item_id token ''", "row 4"]),
    "NAME.inter is a directory": (
        {"NAME.inter": None, "NAME.item": "item_id:token\n1\n"}, ["is a directory", "plain tab-separated"]),
    "no .inter at all": (
        {"NAME.item": "item_id:token\n1\n"}, ["no .inter file in", "/{d}'", "needs NAME.inter"]),
    "non-UTF-8 item file": (
        {"NAME.inter": HEADER + "".join(TINY_ROWS), "NAME.item": b"item_id:token\tmovie_title:token_seq\n1\tCaf\xe9\n"},
        ["{d}.item is not valid UTF-8", "re-encode"]),
    "first line of 100 kB without a newline": (
        inter("x" * 100_000), "longer than 65,536 characters"),
}


@pytest.mark.parametrize("case", sorted(DATASETS))
def test_hostile_dataset_is_refused_through_the_cli(case, tmp_path, capsys):
    files, expected = DATASETS[case]
    folder = _dataset(tmp_path, "bad", files)
    expected = [e.replace("{d}", "bad") for e in ([expected] if isinstance(expected, str) else expected)]
    out = earlier_run(tmp_path)
    code, _, err = run_main(["--suite", SUITE, "--dataset", folder, "--out", out, "--resume", "--quiet"], capsys)
    assert_refused(code, err, expected, out)


def test_fifo_named_inter_is_refused_without_hanging(tmp_path, capsys):
    folder = tmp_path / "fifo"
    folder.mkdir()
    os.mkfifo(folder / "fifo.inter")   # opening it for reading would block forever
    code, _, err = run_main(["--suite", SUITE, "--dataset", folder, "--out", tmp_path / "o"], capsys)
    assert_refused(code, err, "not a regular file")
    assert not (tmp_path / "o").exists()


def test_50mb_line_is_refused_fast_and_in_bounded_memory(tmp_path):
    """One 50 MB id among the tiny rows: numpy would make a fixed-width copy of every id at that
    width (tens of GB). Through a real subprocess, whose own peak memory wait4 reports."""
    folder = tmp_path / "huge"
    folder.mkdir()
    with open(folder / "huge.inter", "w") as fh:
        fh.write(HEADER + "".join(TINY_ROWS[:100]))
        fh.write("7\t" + "9" * (50 << 20) + "\t5\t880000000\n")
        fh.write("".join(TINY_ROWS[100:]))
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "benchmark.run", "--suite", SUITE, "--dataset", folder,
                             "--out", tmp_path / "o"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    killer = threading.Timer(180, proc.kill)   # a hang fails the test instead of blocking it
    killer.start()
    try:
        out, err = proc.stdout.read(), proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        killer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert_refused(proc.returncode, err, ["column 'item_id'", "52,428,800 characters", "row 101"])
    assert time.perf_counter() - start < 150
    assert usage.ru_maxrss < 2 * 1024 * 1024   # KiB: well under 2 GiB (torch alone is ~0.5)
    assert out == "" and not (tmp_path / "o").exists()


def test_duplicate_interactions_keep_the_last_rating(tmp_path):
    """Decision: duplicate (user, item) rows are de-duplicated keeping the last row (documented in
    load_dataset and the README), not refused."""
    rows = "".join(TINY_ROWS)
    first = TINY_ROWS[0].split("\t")
    again = f"{first[0]}\t{first[1]}\t1\t890000000\n"   # same pair, later and rated 1
    folder = _dataset(tmp_path, "dup", inter(HEADER + rows + again))
    clean, dup = load_dataset(TINY), load_dataset(str(folder))
    assert len(dup.interactions) == len(clean.interactions)
    u = int(np.searchsorted(dup.user_tokens, first[0]))
    i = int(np.searchsorted(dup.item_tokens, first[1]))
    row = np.flatnonzero((dup.interactions.users == u) & (dup.interactions.items == i))
    assert row.size == 1 and dup.interactions.ratings[row[0]] == 1
    assert "keep their last rating" in load_dataset.__doc__


def test_byte_order_mark_and_crlf_load_like_the_plain_file(tmp_path):
    text = HEADER + "".join(TINY_ROWS)
    folder = _dataset(tmp_path, "win", {"NAME.inter": b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode()})
    a, b = load_dataset(TINY), load_dataset(str(folder))
    for column in ("users", "items", "ratings"):
        assert np.array_equal(getattr(a.interactions, column), getattr(b.interactions, column))


# ---- suite files ---------------------------------------------------------------------------

def suite(body):
    return f"name: hostile\nmodels: [BPR]\n{body}"


SUITES = {  # case: (suite file text, what the one line must say)
    "unknown model in the suite": (suite("").replace("[BPR]", "[BPR, Bogus]"), "unknown model 'Bogus'"),
    "misspelled training key": (suite("training: {learning_rte: 0.01}\n"), "unknown key 'learning_rte'"),
    "misspelled targets key": (suite("targets: {cout: 3}\n"), "unknown key 'cout'"),
    "misspelled defense key": (suite("defenses:\n  - {name: apr, param: {eps: 1}}\n"), "unknown key 'param'"),
    "misspelled attack parameter": (suite("attacks:\n  - {name: random, params: {filer_items: 5}}\n"),
                                    ["unknown parameter 'filer_items'", "filler_items"]),
    "misspelled defense parameter": (suite("defenses:\n  - {name: apr, params: {epsilon: 1}}\n"),
                                     ["unknown parameter 'epsilon'", "eps"]),
    "model_params for an unknown model": (suite("model_params: {BRP: {embedding_size: 8}}\n"),
                                          "model_params: unknown model 'BRP'"),
    "model_params not a mapping": (suite("model_params: [BPR]\n"), "model_params must be a mapping"),
    "attack params not a mapping": (suite("attacks:\n  - {name: random, params: [5]}\n"), "params must be a mapping"),
    "attacks not a list": (suite("attacks: {name: random}\n"), "attacks must be a list"),
    "zero budget": (suite("attacks:\n  - {name: random, budgets: [0]}\n"), "fake_user_fraction must be a number in (0, 1]"),
    "budget not a number": (suite("attacks:\n  - {name: noise_insert, budgets: [lots]}\n"), "fraction must be a number"),
    "fraction above 1 for shilling": (suite("attacks:\n  - {name: bandwagon, budgets: [2]}\n"), "invalid bandwagon"),
    "zero eps": (suite("attacks:\n  - {name: pgd, budgets: [0]}\n"), "eps must be a number in (0, inf)"),
    "negative eps of a defense": (suite("defenses:\n  - {name: apr, params: {eps: -0.5}}\n"), "invalid defense"),
    "filler_items above the item count": (
        suite("attacks:\n  - {name: random, budgets: [0.1], params: {filler_items: 1000}}\n"),
        ["filler_items=1000", "exceeds the 80 items", "lower filler_items"]),
    "selected_items above the item count": (
        suite("attacks:\n  - {name: bandwagon, budgets: [0.1], params: {selected_items: 90}}\n"),
        ["selected_items=90", "lower selected_items"]),
    "more targets than the policy offers": (suite("targets: {count: 500}\n"), ["targets:", "lower count"]),
    "unknown target policy": (suite("targets: {policy: niche}\n"), "unknown policy 'niche'"),
    "negative learning rate": (suite("training: {learning_rate: -0.1}\n"), "learning_rate must be a positive number"),
    "zero epochs": (suite("training: {epochs: 0}\n"), "epochs must be a positive integer"),
    "seeds as text": (suite("seeds: two\n"), "seeds must be a positive integer"),
    "rating_threshold as text": (suite("rating_threshold: high\n"), "rating_threshold must be a finite number"),
    "same cell listed twice": (suite("attacks:\n  - {name: random, budgets: [0.1, 0.10]}\n"), "appears twice"),
    "suite name that is a path": (suite("").replace("hostile", "../../etc"), "must be a short word"),
    "empty suite file": ("", "is empty"),
    "key given twice": (suite("training: {epochs: 3}\ntraining: {epochs: 5}\n"), ["key 'training' is given twice", "fix the syntax"]),
    "nested key given twice": (suite("training: {epochs: 3, epochs: 5}\n"), "key 'epochs' is given twice"),
    "python object tag": ("name: x\nmodels: !!python/object/apply:os.system ['touch /tmp/pwned']\n", "not valid YAML"),
    "suite file not UTF-8": ("name: caf\udce9\n", "not valid YAML"),
}


@pytest.mark.parametrize("case", sorted(SUITES))
def test_hostile_suite_is_refused(case, tmp_path, capsys):
    text, expected = SUITES[case]
    path = tmp_path / "suite.yaml"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    out = earlier_run(tmp_path)
    code, _, err = run_main(["--suite", path, "--dataset", TINY, "--out", out, "--resume"], capsys)
    assert_refused(code, err, expected, out)


def test_suite_path_that_is_a_directory(tmp_path, capsys):
    (tmp_path / "s.yaml").mkdir()
    code, _, err = run_main(["--suite", tmp_path / "s.yaml", "--out", tmp_path / "o"], capsys)
    assert_refused(code, err, "is a directory")


# ---- flags and the out directory -----------------------------------------------------------

FLAGS = {
    "zero cell timeout": (["--cell-timeout", "0"], "--cell-timeout: must be a positive number"),
    "NaN cell timeout": (["--cell-timeout", "nan"], "--cell-timeout: must be a positive number"),
    "cell timeout as text": (["--cell-timeout", "soon"], "--cell-timeout: must be a positive number, got 'soon'"),
    "zero workers": (["--workers", "0"], "--workers: must be a positive integer"),
    "zero epochs flag": (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
    "zero seeds flag": (["--seeds", "0"], "--seeds must be a positive integer, got 0"),
    "NaN rating threshold": (["--rating-threshold", "nan"], "rating_threshold must be a finite number"),
    "empty --models": (["--models", " , "], "--models must be a non-empty list of names"),
    "same model twice": (["--models", "BPR,BPR"], "appears twice"),
}


@pytest.mark.parametrize("case", sorted(FLAGS))
def test_hostile_flags_are_refused(case, tmp_path, capsys):
    args, expected = FLAGS[case]
    out = earlier_run(tmp_path)
    code, _, err = run_main(["--suite", SUITE, "--out", out, "--resume", *args], capsys)
    assert_refused(code, err, expected, out)


def test_out_that_is_a_file(tmp_path, capsys):
    (tmp_path / "o").write_bytes(EARLIER)
    code, _, err = run_main(["--suite", SUITE, "--out", tmp_path / "o"], capsys)
    assert_refused(code, err, "is a file")
    assert (tmp_path / "o").read_bytes() == EARLIER


@pytest.mark.parametrize("where", ["under /proc", "under a regular file"])
def test_out_that_cannot_be_created(where, tmp_path, capsys):
    """chmod does not stop root: paths that no one can create instead (a read-only or full
    filesystem is in tests/test_interruptions.py)."""
    if where == "under /proc":
        out, why = "/proc/robrec-cannot-be-here/out", "cannot write to --out"
    else:
        (tmp_path / "plain").write_text("x")
        out, why = tmp_path / "plain" / "out", "Not a directory"
    code, _, err = run_main(["--suite", SUITE, "--out", out], capsys)
    assert_refused(code, err, [why, "choose a writable directory"])


def test_second_run_on_the_same_out_is_refused(tmp_path, capsys):
    from benchmark.outdir import OutLock
    out = earlier_run(tmp_path)
    lock = OutLock(out)   # as a run in progress holds it
    try:
        code, _, err = run_main(["--suite", SUITE, "--out", out, "--resume"], capsys)
    finally:
        lock.release()
    assert_refused(code, err, ["another run is writing", "choose another --out"], out)


@pytest.mark.parametrize("flags, changed", [(["--epochs", "7"], "training"),
                                            (["--rating-threshold", "4"], "rating_threshold")])
def test_resume_with_other_settings_is_refused(flags, changed, tmp_path, capsys):
    """Cell ids do not name the training settings: resuming a run under other ones would mix
    two grids in one results file, so it is refused and the run's files are left alone."""
    from benchmark.outdir import check_settings
    from benchmark.spec import load_suite
    out = earlier_run(tmp_path)
    (out / "cells").mkdir()
    check_settings(out, load_suite(str(SUITE)))   # as the run that made OUT wrote them
    before = (out / "settings.json").read_bytes()
    code, _, err = run_main(["--suite", SUITE, "--out", out, "--resume", *flags], capsys)
    assert_refused(code, err, ["was run with other settings", f"({changed}:", "choose a new --out"])
    assert sorted(p.name for p in out.iterdir()) == ["cells", "results.json", "settings.json"]
    assert (out / "settings.json").read_bytes() == before and (out / "results.json").read_bytes() == EARLIER
    assert not any((out / "cells").iterdir())


@pytest.mark.parametrize("damaged", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_resume_with_damaged_settings_is_refused(damaged, tmp_path, capsys):
    out = earlier_run(tmp_path)
    (out / "cells").mkdir()
    (out / "settings.json").write_bytes(damaged)
    code, _, err = run_main(["--suite", SUITE, "--out", out, "--resume"], capsys)
    assert_refused(code, err, ["cannot read the settings", "choose a new --out"])
    assert (out / "settings.json").read_bytes() == damaged and (out / "results.json").read_bytes() == EARLIER


# ---- results files of another schema -------------------------------------------------------

@pytest.mark.parametrize("version", [0, None, "1"])
def test_compare_refuses_a_baseline_of_another_schema(version, tmp_path, capsys, product_results):
    from benchmark import compare
    fixture = product_results
    document = json.loads(fixture.read_text())
    if version is None:
        del document["schema_version"]
    else:
        document["schema_version"] = version
    (tmp_path / "old.json").write_text(json.dumps(document))
    assert compare.main([str(tmp_path / "old.json"), str(fixture)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"schema_version is {version!r}" in err and "regenerate" in err


def test_report_build_refuses_a_folder_without_results(tmp_path, capsys):
    from reports.build import main
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "results.json" in err


# ---- the real command line -----------------------------------------------------------------

@pytest.mark.parametrize("case", ["header mistyped", "NAME.inter is a directory"])
def test_real_cli_gives_the_same_one_line(case, tmp_path):
    files, expected = DATASETS[case]
    folder = _dataset(tmp_path, "bad", files)
    proc = run_cli("benchmark.run", "--suite", SUITE, "--dataset", folder, "--out", tmp_path / "o")
    assert_refused(proc.returncode, proc.stderr, [e.replace("{d}", "bad") for e in expected])
    assert proc.stdout == "" and not (tmp_path / "o").exists()


# ---- issue 29: sources of your own, flags checked before any work, the API, compare ----------

def _csv_rows(sep=","):
    """The tiny dataset as a table with a header, separated by ``sep``."""
    rows = [row.rstrip("\n").split("\t") for row in TINY_ROWS]
    return sep.join(["user_id", "item_id", "rating", "timestamp"]) + "\n" + "".join(
        sep.join(row) + "\n" for row in rows)


def test_a_table_separated_by_tabs_semicolons_or_colons_loads_like_the_csv(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBREC_CACHE", str(tmp_path / "cache"))
    (tmp_path / "comma.csv").write_text(_csv_rows(","))
    reference = load_dataset(str(tmp_path / "comma.csv"))
    for name, sep in [("tabs.csv", "\t"), ("tabs.tsv", "\t"), ("semi.csv", ";"), ("colons.csv", "::")]:
        folder = tmp_path / name.replace(".", "-")
        folder.mkdir()
        (folder / name).write_text(_csv_rows(sep))
        for given in (folder / name, folder):   # the file, or the folder that holds it
            loaded = load_dataset(str(given))
            for column in ("users", "items", "ratings"):
                assert np.array_equal(getattr(loaded.interactions, column), getattr(reference.interactions, column))


def _loop(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    return tmp_path / "a"


def _dangling(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    return tmp_path / "link"


def _file(name, content):
    def make(tmp_path):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return path
    return make


LATIN = b"user_id,item_id\n" + b"".join(b"%d,%d\n" % (u, i) for u in range(500) for i in range(3)) + b"7,caf\xe9\n"

SOURCES = {  # case: (make the --dataset path, what the one line must say)
    "empty CSV": (_file("empty.csv", b""), ["empty.csv is empty", "header line naming its columns"]),
    "CSV not UTF-8, far into the file": (_file("latin.csv", LATIN), [
        "latin.csv is not valid UTF-8", f"(byte {LATIN.index(b'caf') + 3:,}, line 1502)", "re-encode it as UTF-8"]),
    "u.data with two columns": (_file("ml/u.data", b"1\t2\n3\t4\n"), [
        "u.data: row 1 has 2 field(s)", "a u.data row has 4", "name it .csv or .tsv"]),
    "symbolic link loop": (_loop, ["is a symbolic link in a loop", "point it at the dataset"]),
    "dangling symbolic link": (_dangling, ["is a symbolic link to", "which does not exist"]),
    "CSV too sparse to split": (_file("sparse.csv", b"user_id,item_id\n1,2\n1,3\n2,2\n2,3\n2,4\n"), [
        "fewer than 3 interactions", "drop them from", "sparse.csv"]),
}


@pytest.mark.parametrize("case", sorted(SOURCES))
def test_weak_source_messages_name_the_file_and_the_fix(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ROBREC_CACHE", str(tmp_path / "cache"))
    make, expected = SOURCES[case]
    path = make(tmp_path)
    code, _, err = run_main(["--suite", SUITE, "--dataset", path, "--out", tmp_path / "o"], capsys)
    assert_refused(code, err, expected)
    assert ".inter file" not in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("address", ["not an address", "host:notaport", ":::", "127.0.0.1:0", "127.0.0.1:99999"])
def test_malformed_ray_address_is_refused_before_any_work(address, tmp_path, capsys):
    out = earlier_run(tmp_path)
    code, _, err = run_main(["--suite", SUITE, "--backend", "ray", "--ray-address", address, "--out", out,
                             "--resume"], capsys)
    assert_refused(code, err, [f"--ray-address {address!r} is not an address", "HOST:PORT"], out)


def test_ray_address_without_the_ray_backend_is_refused(tmp_path, capsys):
    code, _, err = run_main(["--suite", SUITE, "--ray-address", "127.0.0.1:6379", "--out", tmp_path / "o"], capsys)
    assert_refused(code, err, "add --backend ray")
    assert not (tmp_path / "o").exists()


def test_ray_address_where_nothing_listens_is_one_line_without_ray_logs(tmp_path):
    """Port 1 of loopback: nothing listens there. Ray would wait and log for about a minute; the
    run checks the port first. Through a real subprocess, so that Ray's own output would show."""
    proc = run_cli("benchmark.run", "--suite", SUITE, "--backend", "ray", "--ray-address", "127.0.0.1:1",
                   "--out", tmp_path / "o", timeout=120)
    assert_refused(proc.returncode, proc.stderr, ["--ray-address 127.0.0.1:1: nothing answers there",
                                                  "ray start --head"])
    assert proc.stdout == "" and not (tmp_path / "o").exists()


@pytest.mark.parametrize("where", ["under a regular file", "under /proc"])
def test_export_poisoned_that_cannot_be_written_is_refused_before_any_work(where, tmp_path, capsys):
    if where == "under /proc":
        export = "/proc/robrec-cannot-be-here/export"
    else:
        (tmp_path / "plain").write_text("x")
        export = str(tmp_path / "plain" / "export")
    code, _, err = run_main(["--suite", SUITE, "--export-poisoned", export, "--out", tmp_path / "o"], capsys)
    assert_refused(code, err, [f"cannot write to --export-poisoned '{export}'", "choose a writable directory"])
    assert not (tmp_path / "o").exists() and sorted(p.name for p in tmp_path.iterdir()) in ([], ["plain"])


def test_export_poisoned_check_leaves_no_folder_behind(tmp_path, capsys):
    """The writability check makes the export folder and removes it again when the run is
    refused later (here: an --out that is a file)."""
    (tmp_path / "o").write_bytes(EARLIER)
    code, _, err = run_main(["--suite", SUITE, "--export-poisoned", tmp_path / "new" / "export",
                             "--out", tmp_path / "o"], capsys)
    assert_refused(code, err, "is a file")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("column", ["user_id", "item_id"])
def test_api_refuses_missing_ids_in_a_dataframe(column, tmp_path):
    import pandas as pd

    from benchmark.api import run
    rows = [row.rstrip("\n").split("\t") for row in TINY_ROWS]
    frame = pd.DataFrame({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                          "rating": [float(r[2]) for r in rows]})
    frame.loc[5, column] = None
    with pytest.raises(ValueError) as error:
        run(str(SUITE), dataset=frame, out=tmp_path / "runs" / "o")
    message = str(error.value)
    assert f"column {column} has no value (NaN or None) on row 6" in message and "dropna" in message
    assert "\n" not in message and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("key, value", [("suite", "clean"), ("dataset", "elsewhere"),
                                        ("training", {"epochs": 1}), ("targets", {"policy": "popular", "count": 1})])
def test_compare_refuses_runs_that_are_not_comparable(key, value, tmp_path, capsys, product_results):
    from benchmark import compare
    document = json.loads(product_results.read_text())
    baseline, other = tmp_path / "baseline.json", tmp_path / "other.json"
    baseline.write_text(json.dumps(document))
    document["run"][key] = value
    other.write_text(json.dumps(document))
    assert compare.main([str(baseline), str(other)]) == 2
    err = capsys.readouterr().err
    assert_refused(2, err, ["the two runs are not comparable", f"{key}: ", json.dumps(value, sort_keys=True),
                            "--allow-different-runs"])
    assert compare.main([str(baseline), str(other), "--allow-different-runs"]) == 0
    assert "compare ok" in capsys.readouterr().out
    # refreshing a baseline from another suite's run is the normal path
    assert compare.main([str(baseline), str(other), "--update-baseline"]) == 0
    assert json.loads(baseline.read_text())["run"][key] == value


# ---- help and abbreviations ----------------------------------------------------------------

def test_help_lists_every_suite_and_data_format_in_plain_text():
    from benchmark.spec import available_suites
    proc = run_cli("benchmark.run", "--help")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    for name in available_suites():
        assert name in text
    for form in ("ml-100k", "NAME.inter", "ratings.dat", "movies.dat", "u.data", "u.item", ".csv", ".tsv"):
        assert form in text
    assert "``" not in proc.stdout


@pytest.mark.parametrize("module, argv, expected", [
    ("benchmark.run", ["--suit", "smoke"], "required: --suite"),
    ("benchmark.run", ["--suite", "smoke", "--epoch", "1"], "unrecognized arguments: --epoch 1"),
    ("benchmark.compare", ["a.json", "b.json", "--tol", "ndcg@10:0.1"], "unrecognized arguments: --tol"),
    ("benchmark.compare", ["a.json", "b.json", "--update"], "unrecognized arguments: --update"),
])
def test_abbreviated_flags_are_refused(module, argv, expected, tmp_path):
    proc = run_cli(module, *argv, cwd=tmp_path, timeout=120)
    assert_refused(proc.returncode, proc.stderr, expected)
    assert not list(tmp_path.iterdir())


def test_abbreviated_flags_are_refused_by_the_studies(capsys):
    from benchmark.studies import budget
    with pytest.raises(SystemExit) as exit_:
        budget.main(["smoke", "--run", "somewhere"])
    assert exit_.value.code == 2 and "--runs" in capsys.readouterr().err


# ---- a dataset on which some metric is undefined -------------------------------------------


def test_a_dataset_where_accuracy_is_zero_leaves_undefined_metrics_out(tmp_path, capsys):
    """Every item belongs to one user only: Pop scores each user's test item 0 (no one else has it
    in train) below 40 items of count 1, so every clean accuracy metric is 0 and the relative drops
    under attack (x / 0) are undefined. The run must write a results.json its own reader accepts,
    with those drops left out rather than NaN."""
    from benchmark.api import records_frame
    from benchmark.results.records import read_results
    folder = tmp_path / "disjoint"
    folder.mkdir()
    rows = "".join(f"u{u}\ti{3 * u + k}\t5\n" for u in range(40) for k in range(3))
    (folder / "disjoint.inter").write_text("user_id:token\titem_id:token\trating:float\n" + rows)
    out = tmp_path / "out"
    code, _, err = run_main(["--suite", ROOT / "tests" / "data" / "small_suite.yaml", "--dataset", folder,
                             "--out", out, "--workers", "1", "--quiet"], capsys)
    assert code == 0, err
    records = read_results(out / "results.json")["records"]
    clean = next(r for r in records if r["attack"] is None)
    attacked = next(r for r in records if r["attack"] is not None)
    assert clean["metrics"]["ndcg@10"] == 0 and "target_hr@50" in attacked["metrics"]
    assert "drop_ndcg@10" not in (attacked.get("robustness") or {})
    assert "NaN" not in (out / "results.json").read_text()
    assert len(records_frame(out / "results.json")) == len(records)
