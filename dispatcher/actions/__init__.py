"""The actions dutlab-run runs: one module per deploy/boot/test method, plus what they share.

``registry.py`` lists the method modules and turns job blocks into actions; ``login.py``,
``images.py``, ``overlay.py``, ``power.py``, ``signals.py`` and ``common.py`` are shared parts;
``finalize.py`` is the action that always runs last. This package file imports nothing, so a
module can import one of its siblings without loading them all.
"""
