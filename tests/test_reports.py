"""The HTML report: built from a real run's results, self-contained, escaped, shown by a browser."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.results.aggregate import summarise
from benchmark.results.records import validate_results
from reports.build import PLOTS, build_report, main, render

ROOT = Path(__file__).resolve().parents[1]
# Debian's chromium (make browser installs it as root), else a Chrome found on PATH (CI runners)
CHROMIUM = Path(next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                      if shutil.which(n)), "/usr/bin/chromium"))
# Injected into a copy of the report before the browser opens it: records how many images
# decoded, and whether anything called alert() (it never may: titles hold XSS payloads).
CHECK = """<script>
window.alert = function () { document.documentElement.dataset.alerted = "yes"; };
window.addEventListener("load", function () {
  var images = Array.from(document.images);
  var ok = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.documentElement.dataset.images = ok + "/" + images.length;
});
</script>"""


@pytest.fixture(scope="module", autouse=True)
def _sample(product_results):
    """The results document the product wrote (``tests/conftest.py::product_results``)."""
    global FIXTURE
    FIXTURE = product_results


def sample() -> dict:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    document = sample()
    failed = next(r for r in document["records"] if r["status"] == "ok" and r["defense"] is not None
                  and r["defense"]["name"] == "gan")
    failed.update(status="failed", metrics={}, error="RuntimeError: GAN training diverged at epoch 7")
    (folder / "results.json").write_text(json.dumps(document), encoding="utf-8")
    return build_report(folder)


@pytest.fixture(scope="module")
def html(report) -> str:
    return report.read_text(encoding="utf-8")


def test_the_product_wrote_a_valid_results_document():
    validate_results(sample())


def test_report_is_written_next_to_the_results(report):
    assert report.name == "report.html" and (report.parent / "results.json").exists()


def test_every_plot_section_embeds_a_png(html):
    sections = dict(re.findall(r'<section class="plot" id="plot-(\w+)">(.*?)</section>', html, re.S))
    assert set(sections) == {id_ for id_, *_ in PLOTS}
    for id_, body in sections.items():
        assert re.search(r'<img src="data:image/png;base64,[A-Za-z0-9+/]{1000,}={0,2}"', body), id_


def test_untrusted_titles_are_shown_escaped(html):
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<script>alert" not in html
    assert "<img src=x onerror" not in html


def test_no_external_resources(html):
    references = re.findall(r'\b(?:src|href)\s*=\s*["\']?([^"\'\s>]*)', html, re.I)
    assert references
    assert not [r for r in references if re.match(r"(https?:)?//", r, re.I)]
    assert "@import" not in html and "url(" not in html


def test_sections_are_present(html):
    for section in ("leaderboard", "headline", "cells", "detection", "targets", "failed", "provenance", "reading"):
        assert f'<section id="{section}">' in html
    assert "GAN training diverged" in html                   # the failed cell and its error
    commit = sample()["run"]["commit"]
    assert commit is None or commit in html


def test_sections_without_data_are_left_out():
    document = sample()
    document["records"] = [r for r in document["records"]
                           if r["attack"] is None and r["defense"] is None and r["status"] == "ok"]
    for record in document["records"]:
        record["history"] = None
    document["summary"] = summarise(document["records"])
    page = render(document)
    assert page.count('<section class="plot"') == 1 == page.count('<img src="data:image/png;base64,')  # cost
    for section in ("detection", "targets", "failed", "leaderboard"):
        assert f'id="{section}"' not in page and f'href="#{section}"' not in page
    assert "no data" not in page


def test_leaderboard_ranks_models_by_ndcg_under_attack(html):
    """The leaderboard's score, recomputed from the records: per model, the mean over its
    undefended attack variants of their mean NDCG@10 over seeds."""
    from benchmark.results.leaderboard import leaderboard
    document = sample()
    by = {}
    for r in document["records"]:
        if r["status"] == "ok" and r["attack"] and r["variant"]["defense"] == "none":
            by.setdefault(r["model"], {}).setdefault(r["variant"]["attack"], []).append(r["metrics"]["ndcg@10"])
    expected = {m: sum(sum(v) / len(v) for v in variants.values()) / len(variants) for m, variants in by.items()}
    board = leaderboard(document["summary"])
    assert [row["model"] for row in board] == sorted(expected, key=lambda m: -expected[m])
    for row in board:
        assert row["robust_ndcg@10"] == pytest.approx(expected[row["model"]])
        assert row["attacks"] == len(by[row["model"]])
    assert board[0]["strongest_target_attack"].startswith(("random", "bandwagon"))
    section = html.split('<section id="leaderboard">', 1)[1].split("</section>", 1)[0]
    assert section.index(board[0]["model"]) < section.index(board[-1]["model"])


def test_cli_builds_and_prints_the_path(tmp_path, capsys):
    document = sample()
    document["records"] = [r for r in document["records"] if r["attack"] is None]
    (tmp_path / "results.json").write_text(json.dumps(document), encoding="utf-8")
    assert main([str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "report.html")


def test_cli_schema_mismatch_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps({**sample(), "schema_version": 1}))
    done = subprocess.run([sys.executable, "-m", "reports.build", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert "schema_version is 1" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "report.html").exists()


@pytest.mark.parametrize("problem", ["missing", "not json", "invalid"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, problem):
    document = sample()
    document["records"][0]["metrics"]["ndcg@10"] = "0.2"    # numbers are never strings
    if problem != "missing":
        (tmp_path / "results.json").write_text("{" if problem == "not json" else json.dumps(document))
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "report.html").exists()


@pytest.mark.skipif(not CHROMIUM.exists(),
                    reason="needs a headless browser: apt-get install -y chromium (make browser, as root)")
def test_browser_decodes_every_image_and_runs_no_payload(html, tmp_path):
    page = tmp_path / "checked.html"
    page.write_text(html.replace("<head>", "<head>" + CHECK, 1), encoding="utf-8")
    done = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
         "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'data-images="(\d+)/(\d+)"', done.stdout)
    assert found, f"no image check in the DOM; chromium said: {done.stderr[-500:]}"
    assert found.group(1) == found.group(2) == str(len(PLOTS))
    assert "data-alerted" not in done.stdout
