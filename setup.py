"""Maps the repository folders onto namespaced import packages.

service/ -> dutlab.service, dispatcher/ -> dutlab.dispatcher (design.md: the folders keep their
names and nothing installs a bare `service` package). Sub-packages are discovered so adding one
needs no edit here.
"""
from pathlib import Path

from setuptools import find_packages, setup

ROOTS = {"dutlab.service": "service", "dutlab.dispatcher": "dispatcher"}

packages = []
for name, folder in ROOTS.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]


def data_files():
    # Device-type templates and health checks ship as data under <prefix>/share/dutlab.
    out = []
    for d in sorted({p.parent for p in Path("device-types").rglob("*") if p.is_file()}):
        out.append((f"share/dutlab/{d}", sorted(str(f) for f in d.iterdir() if f.is_file())))
    return out


setup(
    packages=packages,
    package_dir=ROOTS,
    package_data={"dutlab.dispatcher": ["shell/*", "shell/**/*"],
                  "dutlab.service.web": ["templates/*.html", "static/*"]},  # the pages ship their templates
    data_files=data_files(),
)
