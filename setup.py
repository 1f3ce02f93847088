"""Maps the repository folders onto namespaced import packages.

service/ -> dutlab.service, dispatcher/ -> dutlab.dispatcher (design.md: the folders keep their
names and nothing installs a bare `service` package). Sub-packages are discovered so adding one
needs no edit here. device-types/ -> dutlab.device_types: the shipped templates and health checks
travel as package data, found through importlib.resources wherever the package is installed
(`pip install --prefix`, `--user`, a venv, an editable checkout).
"""
import shutil
from pathlib import Path

from setuptools import find_packages, setup

# setuptools copies modules into build/lib and never deletes there: a module renamed or removed
# since the last build would still be installed (a stale migration breaks `migrate`)
shutil.rmtree(Path(__file__).resolve().parent / "build" / "lib", ignore_errors=True)

ROOTS = {"dutlab.service": "service", "dutlab.dispatcher": "dispatcher", "dutlab.device_types": "device-types"}

packages = []
for name, folder in ROOTS.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(folder)]


setup(
    packages=packages,
    package_dir=ROOTS,
    package_data={"dutlab.dispatcher": ["shell/*", "shell/**/*"],
                  "dutlab.service.web": ["templates/*.html", "static/*"],  # the pages ship their templates
                  "dutlab.device_types": ["*.jinja2", "health-checks/*.yaml"]},
)
