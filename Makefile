# The README's commands. Everything they need is installed by scripts/setup.sh.
# MULTINODE=1 (make demo / make lab): dutlab-coordinator and a second QEMU device too, for
# examples/jobs/qemu-multinode.yaml (docs/multinode.md).
DEMO_FLAGS = $(if $(MULTINODE),--multinode)
.PHONY: setup demo lab lab-stop board-lab board-lab-stop test lint bench

setup:
	scripts/setup.sh

demo: setup
	.venv/bin/python scripts/demo.py $(DEMO_FLAGS)

lab: setup
	.venv/bin/python scripts/demo.py --keep-running $(DEMO_FLAGS)

lab-stop:
	.venv/bin/python scripts/demo.py --stop

# `make lab` plus the emulated u-boot board uboot01 behind ser2net, pdudaemon and dnsmasq (root)
board-lab: setup
	.venv/bin/python scripts/board_lab.py

board-lab-stop:
	.venv/bin/python scripts/board_lab.py --stop

test:
	scripts/test.sh

lint: setup
	.venv/bin/ruff check .

bench: setup
	.venv/bin/python benchmarks/run.py
