"""Security: no unsafe deserialisation in our code, safe YAML only, and no network at run time.
(HTML autoescaping of untrusted strings is tested in tests/test_reports.py.)"""
import json
import os
import re
import shutil
import subprocess
import sys

import yaml

from tests.conftest import ROOT, TINY

PACKAGES = ("benchmark", "attacks", "defenses", "reports")
SUITE = ROOT / "tests" / "data" / "tiny_suite.yaml"


def our_code():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path, path.read_text(encoding="utf-8")


def lines_matching(pattern):
    found = []
    for path, text in our_code():
        for number, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(pattern, code):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return found


def test_the_scan_sees_our_code():
    assert sum(1 for _ in our_code()) >= 20


def test_no_pickle_marshal_or_shelve():
    assert not lines_matching(r"\b(import|from)\s+(c?pickle|dill|cloudpickle|marshal|shelve|joblib)\b"), \
        "results and caches are JSON; unpickling a file runs arbitrary code"
    assert not lines_matching(r"\b(pickle|marshal|dill)\.loads?\("), "no unpickling"


def test_torch_load_always_weights_only():
    """Every torch.load passes weights_only=True (the state-dict loader, no arbitrary objects);
    numpy's loader must not allow pickles either."""
    for path, text in our_code():
        for call in re.finditer(r"torch\.load\(", text):
            args = text[call.end():text.find(")", call.end()) + 200]
            assert "weights_only=True" in args, f"{path}: torch.load without weights_only=True"
    assert not lines_matching(r"allow_pickle\s*=\s*True")


def test_yaml_safe_load_only():
    assert not lines_matching(r"\byaml\.(load|load_all|unsafe_load|unsafe_load_all|full_load|full_load_all)\("), \
        "use yaml.safe_load"
    assert not lines_matching(r"\byaml\.(Loader|UnsafeLoader|FullLoader)\b")
    from benchmark.spec import _StrictLoader
    assert issubclass(_StrictLoader, yaml.SafeLoader), "the suite reader must build on yaml.SafeLoader"
    assert lines_matching(r"_StrictLoader\(text\)"), "the suite reader should use the strict safe loader"


def test_no_eval_exec_or_shell():
    """Names resolve through registries, never eval; subprocesses never go through a shell."""
    assert not lines_matching(r"(?<![\w.])(eval|exec)\("), "no eval/exec"
    assert not lines_matching(r"shell\s*=\s*True"), "no shell=True"
    assert not lines_matching(r"\bos\.system\(|\bos\.popen\(")


GUARD = '''\
"""Loaded at start-up by every Python process of the run (PYTHONPATH): any internet socket
is logged and refused."""
import os
import socket

_LOG = os.environ["NO_NET_LOG"]
_real = socket.socket


class _Guarded(_real):
    def __init__(self, family=socket.AF_INET, *args, **kwargs):
        if family in (socket.AF_INET, socket.AF_INET6):
            with open(_LOG, "a") as fh:
                fh.write(f"{os.getpid()} socket family {int(family)}\\n")
            raise OSError(101, "network is not allowed in this test")
        super().__init__(family, *args, **kwargs)


socket.socket = _Guarded
_gai = socket.getaddrinfo


def _getaddrinfo(host, *args, **kwargs):
    with open(_LOG, "a") as fh:
        fh.write(f"{os.getpid()} getaddrinfo {host}\\n")
    raise OSError(101, "name resolution is not allowed in this test")


socket.getaddrinfo = _getaddrinfo
'''


def _unshare_net():
    if shutil.which("unshare") is None:
        return None
    for command in (["unshare", "-n"], ["unshare", "-rn"]):
        if subprocess.run([*command, "true"], capture_output=True).returncode == 0:
            return command
    return None


def test_tiny_suite_runs_without_network(tmp_path):
    """One seed of the tiny suite (training, every attack family, the report) in a network
    namespace with no interface up (``unshare -n``, when allowed) and with internet sockets
    refused and logged by a sitecustomize guard (loaded by every Python process, pool workers
    included)."""
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(GUARD)
    log = tmp_path / "net.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(guard), str(ROOT)]), "NO_NET_LOG": str(log)}
    prefix = _unshare_net() or []
    out = tmp_path / "out"
    proc = subprocess.run([*prefix, sys.executable, "-m", "benchmark.run", "--suite", str(SUITE), "--dataset",
                           TINY, "--seeds", "1", "--workers", "1", "--out", str(out), "--quiet"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not log.exists(), f"network used: {log.read_text()}"
    document = json.loads((out / "results.json").read_text())
    assert {r["status"] for r in document["records"]} <= {"ok", "not_applicable"}
    assert (out / "report.html").stat().st_size > 0


def test_the_guard_does_block(tmp_path):
    """The guard above is no placebo: a process that tries to connect is refused and logged."""
    (tmp_path / "sitecustomize.py").write_text(GUARD)
    log = tmp_path / "net.log"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "NO_NET_LOG": str(log)}
    proc = subprocess.run([sys.executable, "-c", "import socket; socket.create_connection(('192.0.2.1', 80), 1)"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "not allowed" in proc.stderr
    assert log.read_text().strip()
