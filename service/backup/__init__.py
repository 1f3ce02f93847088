"""Backups and restores of a lab server (docs/backup.md).

A backup is one tar.gz: the database dump, the settings file, the admin config the settings point
at (template and health-check folders, the secret key) and every job output folder, plus
MANIFEST.json (versions, database kind, time, a sha256 per member).

`archive.py` holds the format and the database commands both sides use, `create.py` writes an
archive (and says in which order, and why), `restore.py` checks, verifies and loads one into a
fresh install.
"""
