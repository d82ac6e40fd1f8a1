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
	$(BIN)/vitdesk sample --out $(DEMO_OUT)/sample
	$(BIN)/vitdesk inspect $(DEMO_OUT)/sample

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
