# Set-up and entry points. `make run` and `make test` install what is missing first (idempotent).
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
SUITE   ?= all
# Where torch comes from: empty = pip's default index. CI runners with a GPU-less Linux set the
# CPU-only wheel index here (see .github/workflows/robustness.yml), else pip pulls a CUDA build.
TORCH_INDEX ?=
ARGS    ?=

.PHONY: install run smoke gate test test-slow bench browser screenshot clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "pip<26"
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m benchmark.run --suite $(SUITE) $(ARGS)

smoke: $(STAMP)
	$(PY) -m benchmark.run --suite smoke $(ARGS)

# The CI robustness gate: run the smoke suite, compare it with the committed baseline
# (exit 1 on a regression). Refresh the baseline only on purpose: make gate UPDATE=1.
GATE_OUT ?= runs/gate-smoke
gate: $(STAMP)
	rm -rf $(GATE_OUT)
	$(PY) -m benchmark.run --suite smoke --out $(GATE_OUT) --quiet
	$(PY) -m benchmark.compare benchmark/baselines/smoke.json $(GATE_OUT)/results.json $(if $(UPDATE),--update-baseline,)

# docs/report.jpg, the README's picture: the top of a run's report.html in headless Chromium.
# make screenshot RUN=runs/all-...
screenshot: $(STAMP) browser
	test -f "$(RUN)/report.html" || { echo "pass RUN=DIR, a run folder with report.html" >&2; exit 2; }
	chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,1600 \
	  --screenshot=docs/report.png "$(RUN)/report.html" 2>/dev/null
	$(PY) -c "from PIL import Image; Image.open('docs/report.png').convert('RGB').save('docs/report.jpg', quality=80)"
	rm docs/report.png

# Headless Chromium (Debian's package) renders report.html in one test; installed when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v google-chrome >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  (apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends chromium >/dev/null)); } || \
	  echo "note: chromium not installed; the browser test will be skipped"

test: $(STAMP) browser
	$(PY) -m pytest -q

test-slow: $(STAMP) browser
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) -m pytest benchmarks --benchmark-only -q

clean:
	rm -rf runs .pytest_cache .benchmarks
