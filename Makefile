# The README's commands. Everything they need is installed by scripts/setup.sh.
.PHONY: setup demo lab lab-stop test lint bench

setup:
	scripts/setup.sh

demo: setup
	.venv/bin/python scripts/demo.py

lab: setup
	.venv/bin/python scripts/demo.py --keep-running

lab-stop:
	.venv/bin/python scripts/demo.py --stop

test:
	scripts/test.sh

lint: setup
	.venv/bin/ruff check .

bench: setup
	.venv/bin/python benchmarks/run.py
