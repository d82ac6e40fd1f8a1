# Two commands set everything up on a fresh machine:
#   make demo   install into .venv, run the demo on the embedded synthetic CT sample
#   make test   install into .venv with test extras, lint, run the whole suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_OUT ?= vitdesk-demo

.PHONY: install install-test demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	$(BIN)/vitdesk demo --quick --out $(DEMO_OUT)
	@# open the workbench on the result when there is a display, else say where it is
	@if [ -n "$$DISPLAY$$WAYLAND_DISPLAY" ] || [ "$$(uname)" = Darwin ]; then \
	  $(BIN)/vitdesk gui $(DEMO_OUT); \
	else \
	  echo "no display: open $(DEMO_OUT)/report/report.html (or report.pdf) to see the report"; \
	fi

lint: install-test
	$(BIN)/ruff check vitdesk tests bench

test: install-test lint
	@# pytest exits 5 when it collects nothing: that must fail, never pass empty
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo 'no tests were collected' >&2; fi; exit $$rc

bench: install-test
	$(BIN)/python bench/load_series.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) build *.egg-info
