"""Kernel modules for the dutlab QEMU test initramfs: which ones, in what order, and their bytes.

Helper of scripts/_initramfs.py. Dependencies come from modules.dep when the kernel package
ships one, otherwise from each module's own ``depends=`` modinfo field (and ``softdep=pre:``);
built-in modules (modules.builtin) are skipped; .ko.xz/.ko.zst/.ko.gz are decompressed.
Standard library only (zstd for .ko.zst).
"""

from __future__ import annotations

import gzip
import lzma
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path


def _modname(path_or_name: str) -> str:
    base = os.path.basename(path_or_name)
    base = re.sub(r"\.ko(\.(xz|zst|gz))?$", "", base)
    return base.replace("-", "_")


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    name = path.name
    if name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if name.endswith(".ko.zst"):
        if shutil.which("zstd") is None:
            sys.exit("_initramfs.py: zstd is needed to decompress .ko.zst modules")
        return subprocess.run(["zstd", "-dc"], input=data, stdout=subprocess.PIPE, check=True).stdout
    return data


def _modinfo(data: bytes, key: str) -> list[str]:
    """Values of ``key=`` in the module's .modinfo strings (NUL separated)."""
    return [
        m.group(1).decode("ascii", "replace")
        for m in re.finditer(rb"(?:^|\0)" + re.escape(key.encode()) + rb"=([^\0]*)\0", data)
    ]


class ModuleTree:
    def __init__(self, moddir: Path):
        self.moddir = moddir
        self.paths: dict[str, Path] = {}
        for p in sorted(moddir.rglob("*.ko*")):
            if re.search(r"\.ko(\.(xz|zst|gz))?$", p.name):
                self.paths[_modname(p.name)] = p
        self.builtin: set[str] = set()
        builtin = moddir / "modules.builtin"
        if builtin.exists():
            self.builtin = {_modname(line.strip()) for line in builtin.read_text().split() if line}
        self.dep: dict[str, list[str]] | None = None
        depfile = moddir / "modules.dep"
        if depfile.exists():
            self.dep = {}
            for line in depfile.read_text().splitlines():
                if ":" not in line:
                    continue
                mod, deps = line.split(":", 1)
                self.dep[_modname(mod)] = [_modname(d) for d in deps.split()]
        self._data: dict[str, bytes] = {}

    def data(self, name: str) -> bytes:
        if name not in self._data:
            self._data[name] = _read_module(self.paths[name])
        return self._data[name]

    def hard_deps(self, name: str) -> list[str]:
        if self.dep is not None and name in self.dep:
            return list(self.dep[name])
        return [d.replace("-", "_") for v in _modinfo(self.data(name), "depends") for d in v.split(",") if d]

    def soft_pre_deps(self, name: str) -> list[str]:
        """Modules named in "softdep=pre: a b post: c" (optional: may be aliases)."""
        pre: list[str] = []
        for v in _modinfo(self.data(name), "softdep"):
            m = re.search(r"pre:\s*(.*?)(?:\s*post:|$)", v)
            if m:
                pre += [_modname(x) for x in m.group(1).split()]
        return pre

    def resolve(self, wanted: list[str]) -> list[str]:
        """Load order (dependencies first) of the non-built-in modules needed."""
        order: list[str] = []
        seen: set[str] = set()

        def visit(name: str, required: bool, stack: tuple[str, ...]) -> None:
            name = name.replace("-", "_")
            if name in seen or name in stack:
                return
            if name in self.builtin:
                seen.add(name)
                return
            if name not in self.paths:
                if required:
                    sys.exit(f"_initramfs.py: module {name} is neither built in nor in {self.moddir}")
                return
            for d in self.soft_pre_deps(name):
                visit(d, False, stack + (name,))
            for d in self.hard_deps(name):
                visit(d, True, stack + (name,))
            seen.add(name)
            order.append(name)

        for w in wanted:
            visit(w, True, ())
        return order
