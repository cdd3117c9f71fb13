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
    undefended attack variants of their mean NDCG@10 over seeds (the cells, not the retrains)."""
    from benchmark.results.leaderboard import leaderboard
    document = sample()
    by = {}
    for r in document["records"]:
        if r["status"] == "ok" and r["attack"] and r["variant"]["defense"] == "none" and r["replicate"] == 0:
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
    assert found.group(1) == found.group(2) == str(len(PLOTS) + 1)   # the plots and the threat cards' one
    assert "data-alerted" not in done.stdout


# --- reading the report: numbers, scales, the attacker's gain, names that look like math (issue 29) ---

def test_formatting_helper_reads_well():
    from reports.formatting import change, num, pct, places, plain, seeds, signed, value
    assert num(-0.00004, 3) == "0.000" and num(-0.0004, 4) == "-0.0004" and num(None) == "—"
    assert num(float("nan")) == "—" and num(1372.4, 0) == "1372" and num(-0.4, 0) == "0"
    assert pct(-0.0003) == "0.0%" and pct(0.0812) == "8.1%" and pct(-0.08) == "-8.0%"
    assert signed(0.00042, 4) == "+0.0004" and signed(-0.00001, 4) == "0.0000" and signed(-898.2, 0) == "-898"
    assert change(1371.7, 474.1, 0) == "1372 → 474" and change(None, 0.5, 2) == "— → 0.50"
    assert places(897.6) == "898 places up" and places(-84.1) == "84 places down" and places(0.2) == "unmoved"
    assert places(1.0) == "1 place up"
    assert value(0.06304669364224531) == "0.06305" and value(100000) == "100,000" and value("x86_64") == "x86_64"
    assert value(True) == "True" and value(-1e-9) == "-1e-09"
    assert seeds([0]) == "1 seed (0)" and seeds([0, 1, 2]) == "3 seeds (0, 1, 2)" and seeds(3) == "3 seeds"
    assert plain("a$b$") == r"a\$b\$" and plain("no dollar_^") == "no dollar_^"


def _visible_text(page: str) -> str:
    page = re.sub(r'src="data:[^"]*"', "", page)
    page = re.sub(r"<(script|style)\b.*?</\1>", "", page, flags=re.S)
    return re.sub(r"<[^>]+>", " ", page)


def test_report_numbers_are_formatted_for_reading(html):
    text = _visible_text(html)
    assert not re.search(r"-0\.0+%|-0\.0+\b(?!\d)", text), "a zero printed with a sign"
    assert not re.search(r"\d\.\d{7,}", text), "a float printed with all its digits"
    seeds_ = sample()["run"]["seeds"]
    header = html.split("<nav>", 1)[0]
    assert f"{len(seeds_)} seed{'s' if len(seeds_) != 1 else ''} ({', '.join(map(str, seeds_))})" in header


def _frame():
    from reports.plots import first_runs, records_frame
    return first_runs(records_frame(sample()["records"]))


def test_heatmap_scales_start_at_zero_and_are_shared():
    """The numbers ``plot_heatmaps`` draws from: every scale anchored at 0 with a common upper
    bound (never the data's own max of a near-zero map), diverging around 0 where values can be
    negative, and the attacks that do not aim at targets greyed in the target maps."""
    import numpy as np

    from benchmark.results.leaderboard import TARGET_FAMILIES
    from reports.plots import DROP_FLOOR, HR_FLOOR, heatmap_panels, undefended_attacks
    df = _frame()
    panels = {p.column: p for p in heatmap_panels(df)}
    assert set(panels) == {"drop_ndcg@10", "target_hr@50", "target_rank"}
    drop = panels["drop_ndcg@10"]
    values = drop.values.to_numpy()
    assert drop.center == 0 and drop.vmin == -drop.vmax and drop.vmax >= max(DROP_FLOOR, np.nanmax(np.abs(values)))
    assert drop.vmax <= 2.5 * max(DROP_FLOOR, np.nanmax(np.abs(values)))    # a nice bound, not a blow-up
    hr = panels["target_hr@50"]
    assert hr.vmin == 0 and hr.center is None and hr.vmax >= max(HR_FLOOR, np.nanmax(hr.values.to_numpy()))
    rank = panels["target_rank"]
    assert (rank.vmin, rank.center, rank.vmax) == (-1, 0, 1)
    family = dict(zip(undefended_attacks(df)["label"], undefended_attacks(df)["family"]))
    untargeted = sorted(label for label, f in family.items() if f not in TARGET_FAMILIES)
    assert untargeted and all(sorted(p.untargeted) == untargeted for p in (hr, rank))
    for panel in (hr, rank):
        assert panel.values[untargeted].isna().all().all()
        assert panel.values.drop(columns=untargeted).notna().any().any()
    assert all(label.split()[0] in drop.values.columns.str.split().str[0] for label in untargeted)
    # the row labels of a target map say the clean value
    assert all("\nclean " in label for label in hr.row_labels + rank.row_labels)


def test_axes_start_at_zero_and_one_point_gets_a_readable_range():
    from reports.plots import HR_FLOOR, padded_range, success_limits
    df = _frame()
    low, high = success_limits(df["target_hr@50"])
    assert low == 0 and high >= max(HR_FLOOR, df["target_hr@50"].max())
    low, high = padded_range([0.0058], min_span=0.02, include=0.0)     # one point, near zero
    assert low < 0 <= 0.0058 < high and high - low >= 0.02


def test_strongest_target_attack_is_chosen_by_gain_then_rank():
    """The leaderboard's strongest target attack, recomputed from the summary's paired shifts: the
    largest target HR@50 gain over clean, ties broken by how far the targets' rank moved up; and
    with every gain set to a tie, the one that moved the rank most (never the first by name)."""
    from benchmark.results.leaderboard import TARGET_FAMILIES, leaderboard
    document = sample()
    summary = document["summary"]

    def rows(model, metric, families):
        return {r["variant"]: r["mean"] for r in summary if r["model"] == model and r["defense"] == "none"
                and r["family"] in families and r["metric"] == metric}
    board = leaderboard(summary)
    assert board
    for row in board:
        gains = rows(row["model"], "shift_target_hr@50", TARGET_FAMILIES)
        moved = {k: -v for k, v in rows(row["model"], "rank_change", TARGET_FAMILIES).items()}
        best = max(gains, key=lambda k: (round(gains[k], 9), round(moved[k], 9)))
        assert (row["target_hr_gain"], row["target_rank_gain"]) == (gains[best], moved[best])
        assert row["clean_target_hr@50"] == rows(row["model"], "target_hr@50", ("clean",))["clean"]
        assert row["clean_target_rank"] == rows(row["model"], "target_rank", ("clean",))["clean"]
        assert row["target_rank"] == pytest.approx(row["clean_target_rank"] - row["target_rank_gain"])
    for r in summary:   # every target attack ties on HR@50
        if r["family"] in TARGET_FAMILIES and r["metric"] == "shift_target_hr@50":
            r["mean"] = 0.0
    for row in leaderboard(summary):
        moved = {k: -v for k, v in rows(row["model"], "rank_change", TARGET_FAMILIES).items()}
        assert row["strongest_target_attack"] == max(moved, key=moved.get)


def test_attacker_gain_is_shown_against_the_clean_value(html):
    from benchmark.results.leaderboard import leaderboard
    from reports.formatting import change
    board = leaderboard(sample()["summary"])
    section = html.split('<section id="leaderboard">', 1)[1].split("</section>", 1)[0]
    for row in board:
        assert change(row["clean_target_hr@50"], row["target_hr@50"], 4) in section
        assert change(row["clean_target_rank"], row["target_rank"], 0) in section
    headline = html.split('<section id="headline">', 1)[1].split("</section>", 1)[0]
    assert 'id="gains"' in headline and headline.count("→") >= 2 * len(board)


def _hostile_names(document: dict) -> dict:
    """Model, dataset and attack names that mathtext would read as (broken) math, or HTML as tags."""
    names = {"BPR": "Bad$Model$", "Pop": "a$_^\\b<script>$"}
    attack = "band$^_$wagon<script>"
    for r in document["records"] + document["summary"] + document.get("noise_floor", []):
        r["model"] = names.get(r["model"], r["model"])
        r["dataset"] = "d$\\x_$<script>"
        if isinstance(r.get("attack"), dict) and r["attack"]["name"] == "bandwagon":
            r["attack"]["name"] = attack
        if isinstance(r.get("variant"), str):
            r["variant"] = r["variant"].replace("bandwagon", attack)
    document["run"]["dataset"] = "d$\\x_$<script>"
    return document


def test_names_with_dollars_draw_every_figure(tmp_path):
    """Names with ``$ _ ^ \\`` (mathtext) and ``<script>`` (HTML) draw every figure and are escaped."""
    document = _hostile_names(sample())
    (tmp_path / "results.json").write_text(json.dumps(document), encoding="utf-8")
    page = build_report(tmp_path, document).read_text(encoding="utf-8")
    sections = dict(re.findall(r'<section class="plot" id="plot-(\w+)">(.*?)</section>', page, re.S))
    assert set(sections) == {id_ for id_, *_ in PLOTS}
    assert all('src="data:image/png;base64,' in body for body in sections.values())
    assert "Bad$Model$" in page and "a$_^\\b&lt;script&gt;$" in page and "<script>$" not in page


def test_plain_names_reach_matplotlib_literally():
    """What the figures hand matplotlib: every name escaped, so no text is parsed as math."""
    import matplotlib.text

    from reports.plots import plain_names
    df = plain_names(_frame().assign(model="x$^_$y"))
    label = matplotlib.text.Text(text=df["model"].iloc[0])
    assert label._preprocess_math(label.get_text()) == ("x$^_$y", False)


@pytest.mark.skipif(not CHROMIUM.exists(),
                    reason="needs a headless browser: apt-get install -y chromium (make browser, as root)")
def test_browser_at_1280px_fits_the_leaderboard_and_shows_clean_to_attacked(html, tmp_path):
    """The report in headless Chromium at 1280 px: the page does not scroll sideways, the
    leaderboard ends inside the page's text column, and its attacker-gain cells read clean → attacked."""
    from benchmark.results.leaderboard import leaderboard
    from reports.formatting import change
    measure = """<script>
window.addEventListener("load", function () {
  var root = document.documentElement, board = document.querySelector("#leaderboard table");
  root.dataset.viewport = window.innerWidth;
  root.dataset.page = root.clientWidth;
  root.dataset.scroll = root.scrollWidth;
  root.dataset.board = Math.ceil(board.getBoundingClientRect().right);
  root.dataset.column = Math.floor(board.parentElement.getBoundingClientRect().right);  /* the text column */
});
</script>"""
    page = tmp_path / "measured.html"
    page.write_text(html.replace("<head>", "<head>" + measure, 1), encoding="utf-8")
    common = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--disable-quic", "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync", "--window-size=1280,2400",
              f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    done = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    sizes = dict(re.findall(r'data-(viewport|page|scroll|board|column)="(\d+)"', done.stdout))
    assert len(sizes) == 5, f"no measurements in the DOM; chromium said: {done.stderr[-500:]}"
    sizes = {k: int(v) for k, v in sizes.items()}
    assert sizes["viewport"] == 1280
    assert sizes["scroll"] <= sizes["page"], sizes     # nothing wider than the page
    assert sizes["board"] <= sizes["column"] <= sizes["page"], sizes   # inside the page's text column
    cells = re.findall(r'<td class="n gain" data-gain="([^"]+)"><span class="pair">([^<]*)',
                       done.stdout.split('id="headline"')[0])
    board = leaderboard(sample()["summary"])
    assert [text.strip() for _, text in cells] == [
        change(*pair) for row in board for pair in ((row["clean_target_hr@50"], row["target_hr@50"], 4),
                                                    (row["clean_target_rank"], row["target_rank"], 0))]
    shot = tmp_path / "report.png"
    subprocess.run([*common, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    assert int.from_bytes(shot.read_bytes()[16:20], "big") == 1280       # PNG width, from its header
