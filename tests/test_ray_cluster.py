"""More than one machine: a real two-node Ray cluster on this host, each node started by the ``ray``
CLI of this environment on loopback only, one CPU each. ``--backend ray --ray-address`` on it
gives the records of the local backend, and a second node killed with SIGKILL mid-run loses no
finished cell: the run completes on the head node (Ray retries the killed node's tasks), or,
when the driver itself was attached to the killed node (two nodes on one host share the address
127.0.0.1, and Ray attaches a driver to either), it fails and ``--resume`` completes it once Ray
has marked the node dead.

Loopback only, on Ray 2.6: Ray turns the address 127.0.0.1 into the host's outward address
(``ray._private.services.resolve_ip_for_localhost``) unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0,
which the head node and the driver get here; a non-head node refuses to start with it, so the
second node runs the same CLI (``ray.scripts.scripts.cli``) with only that rewrite turned off.
With node address 127.0.0.1 every Ray server of both nodes listens on 127.0.0.1 only.

Each node is a process group of its own (``ray start`` in a new session; its raylet, agents and
task workers stay in that group), which the test SIGKILLs to kill the node and, at the end,
the whole cluster, failed test or not: never ``ray stop``, which would stop every Ray on the host.

The dataset is passed as an absolute path: a relative one would be looked up in each Ray
worker's own working directory (the folder its node was started from), not the driver's.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmark.results.records import read_results
from tests.conftest import ROOT, TINY

ray = pytest.importorskip("ray")

SUITE = ROOT / "tests" / "data" / "tiny_suite.yaml"
RAY = Path(sys.executable).parent / "ray"
LOOPBACK = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# ``ray start ARGS`` that keeps 127.0.0.1 as given (see the module docstring).
SECOND_NODE = ("import sys, ray._private.services as services; "
               "services.resolve_ip_for_localhost = lambda address: address; "
               "from ray.scripts.scripts import cli; sys.argv = ['ray', 'start', *sys.argv[1:]]; cli()")
ALIVE = """import sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
for _ in range(120):
    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) == int(sys.argv[2]):
        break
    time.sleep(0.5)
print(sorted((n["NodeManagerAddress"], n["Resources"].get("CPU")) for n in nodes))
"""


@dataclass
class Cluster:
    address: str
    driver_env: dict
    head: int        # process group of the head node
    node: int        # process group of the second node
    root: Path       # the head's temp dir is root/head, the second node's root/node/ray

    def alive(self, count: int) -> str:
        """The alive nodes once there are ``count`` (or after 60 s), as (address, CPUs)."""
        proc = subprocess.run([sys.executable, "-c", ALIVE, self.address, str(count)], cwd=ROOT,
                              env=self.driver_env, capture_output=True, text=True, timeout=180)
        return proc.stdout.strip().splitlines()[-1] if proc.returncode == 0 and proc.stdout.strip() else ""

    def driver_node(self, pid: int) -> str | None:
        """Where the driver ``pid`` is attached, "head" or "node": both nodes are 127.0.0.1, so Ray
        attaches a driver to either. Its core-driver log names its raylet's node id, and each
        node's raylet.out starts with its own."""
        logs = list((self.root / "driver").glob(f"**/logs/python-core-driver-*_{pid}.log"))
        raylet = re.search(r"raylet ([0-9a-f]{56})", logs[0].read_text()) if logs else None
        for name in ("head", "node"):
            for out in (self.root / name).glob("**/logs/raylet.out"):
                own = re.search(r"Node ID: ([0-9a-f]{56})", out.read_text())
                if raylet and own and own.group(1) == raylet.group(1):
                    return name
        return None


def free_ports(count: int) -> list:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def start_node(command, env, log: Path, groups: list) -> int:
    with open(log, "w") as fh:
        proc = subprocess.Popen([str(c) for c in command], cwd=ROOT, env=env, stdout=fh, stderr=fh,
                                start_new_session=True)
    groups.append(proc.pid)            # ``ray start`` leads the group its node lives in
    assert proc.wait(timeout=180) == 0, log.read_text()[-3000:]
    return proc.pid


def kill_group(group: int) -> None:
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def cluster():
    # Ray's socket paths must stay short (107 bytes), so its temp root is a short /tmp folder.
    root = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
    base = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    port, client, head_agent, node_agent = free_ports(4)
    address, groups = f"127.0.0.1:{port}", []
    try:
        head = start_node([RAY, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", port,
                           "--ray-client-server-port", client, "--dashboard-agent-listen-port", head_agent,
                           "--num-cpus", "1", "--include-dashboard=false", "--disable-usage-stats",
                           "--temp-dir", root / "head"], {**base, LOOPBACK: "0"}, root / "head.log", groups)
        node = start_node([sys.executable, "-c", SECOND_NODE, "--address", address, "--node-ip-address",
                           "127.0.0.1", "--dashboard-agent-listen-port", node_agent, "--num-cpus", "1",
                           "--disable-usage-stats"], {**base, "RAY_TMPDIR": str(root / "node")},
                          root / "node.log", groups)
        driver_env = {**base, LOOPBACK: "0", "RAY_TMPDIR": str(root / "driver")}
        cluster = Cluster(address, driver_env, head, node, root)
        assert cluster.alive(2) == "[('127.0.0.1', 1.0), ('127.0.0.1', 1.0)]"
        yield cluster
    finally:
        for group in reversed(groups):
            kill_group(group)
        time.sleep(1)
        shutil.rmtree(root, ignore_errors=True)


def cli(out: Path, *flags, env=None, popen=False, log=None):
    command = [sys.executable, "-m", "benchmark.run", "--suite", str(SUITE), "--dataset", TINY,
               "--out", str(out), "--quiet", *map(str, flags)]
    if popen:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def records_of(out: Path) -> dict:
    return {r["cell_id"]: r for r in read_results(out / "results.json")["records"]}


def assert_same_records(got: dict, reference: dict) -> None:
    """The comparison of tests/test_determinism.py: cell ids, statuses, metrics (exactly)."""
    assert sorted(got) == sorted(reference)
    for cell, record in reference.items():
        assert got[cell]["status"] == record["status"], cell
        assert got[cell]["metrics"] == record["metrics"], cell
        assert got[cell]["attack"] == record["attack"] and got[cell].get("history") == record.get("history")


def planned_cells(seeds: int) -> list:
    from benchmark.plan import plan
    from benchmark.spec import load_suite
    suite = load_suite(str(SUITE))
    suite.seeds, suite.dataset = seeds, TINY
    return [cid for job in plan(suite) for cid, *_ in job.cells()]


def cell_files(out: Path) -> list:
    folder = out / "cells"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def busy_workers(group: int) -> list:
    """Pids of the group's Ray workers running a task now (idle ones are titled ``ray::IDLE``)."""
    busy = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getpgid(int(pid)) == group and \
                    Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::_ray_call"):
                busy.append(int(pid))
        except (OSError, ProcessLookupError):
            continue
    return busy


@pytest.mark.slow
def test_two_node_cluster_gives_the_local_records(cluster, tmp_path):
    on_cluster = cli(tmp_path / "cluster", "--backend", "ray", "--ray-address", cluster.address,
                     env=cluster.driver_env)
    assert on_cluster.returncode == 0, on_cluster.stderr[-3000:]
    local = cli(tmp_path / "local", "--workers", "1")
    assert local.returncode == 0, local.stderr[-3000:]
    reference = records_of(tmp_path / "local")
    assert len(reference) == len(planned_cells(2)) == 16
    assert_same_records(records_of(tmp_path / "cluster"), reference)
    assert json.loads((tmp_path / "cluster" / "results.json").read_text())["run"]["backend"] == "ray"


@pytest.mark.slow
def test_a_node_killed_mid_run_loses_no_finished_cell(cluster, tmp_path):
    """4 seeds (32 cells). Once 6 cells are on disk and the second node is running a task, its
    whole process group (raylet, agents, workers) gets SIGKILL. The run must end on the head
    node, or ``--resume`` end it; then every planned cell is on disk once, the cells written
    before the kill are byte for byte the same, and the records are those of a local run."""
    from benchmark.cells import cell_filename
    seeds, out, log = 4, tmp_path / "out", open(tmp_path / "run.log", "ab")
    expected = planned_cells(seeds)
    t0 = time.monotonic()
    proc = cli(out, "--seeds", seeds, "--backend", "ray", "--ray-address", cluster.address,
               env=cluster.driver_env, popen=True, log=log)
    try:
        deadline = time.monotonic() + 600
        while len(cell_files(out)) < 6 or not busy_workers(cluster.node):
            assert proc.poll() is None, f"the run ended before the kill: {(tmp_path / 'run.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "no 6 cells with the second node busy after 600 s"
            time.sleep(0.05)
        interrupted = busy_workers(cluster.node)
        kept = {p.name: p.read_bytes() for p in cell_files(out)}
        os.killpg(cluster.node, signal.SIGKILL)
        killed_at = time.monotonic() - t0
        attached = cluster.driver_node(proc.pid)
        rc = proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            kill_group(proc.pid)
        log.close()
    first_run = time.monotonic() - t0
    resumed = rc != 0
    if resumed:
        # Only when the driver was attached to the killed node (one host: see driver_node); a
        # driver on the head node rides out the kill. --resume once Ray has marked it dead.
        first = (tmp_path / "run.log").read_text()
        assert attached == "node", first[-3000:]
        assert "Traceback" not in first and "error: the Ray node this driver was attached to died" in first \
            and f"rerun with --resume --out {out}" in first, first[-3000:]
        deadline = time.monotonic() + 300
        while cluster.alive(1) != "[('127.0.0.1', 1.0)]":
            assert time.monotonic() < deadline, "the killed node is still alive after 300 s"
        again = cli(out, "--seeds", seeds, "--backend", "ray", "--ray-address", cluster.address, "--resume",
                    env=cluster.driver_env)
        assert again.returncode == 0, again.stderr[-3000:]
    print(f"\n{len(expected)} cells, {len(kept)} on disk at the kill ({killed_at:.1f} s, "
          f"{len(interrupted)} task(s) running on the killed node, driver on the {attached}); "
          f"first run exit {rc} after "
          f"{first_run:.1f} s; {'--resume needed' if resumed else 'no --resume needed'}; "
          f"total {time.monotonic() - t0:.1f} s")

    records = read_results(out / "results.json")["records"]
    ids = [r["cell_id"] for r in records]
    assert sorted(ids) == sorted(expected) and len(set(ids)) == len(ids)
    assert sorted(p.name for p in (out / "cells").iterdir()) == sorted(map(cell_filename, expected))
    assert not [p for p in out.rglob("*") if p.name.startswith(".")], "temp files left behind"
    assert all(r["status"] in ("ok", "not_applicable") for r in records)
    assert all((out / "cells" / name).read_bytes() == data for name, data in kept.items())

    local = cli(tmp_path / "local", "--seeds", seeds, "--workers", "1")
    assert local.returncode == 0, local.stderr[-3000:]
    assert_same_records({r["cell_id"]: r for r in records}, records_of(tmp_path / "local"))
