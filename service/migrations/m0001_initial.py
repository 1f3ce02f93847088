"""The first schema: every table of models.MODELS as of version 0.1.

Later migrations must use playhouse.migrate operations, never edit this one; a test compares the
migrated schema with the models so drift is caught.
"""

from ..models import MODELS


def up(db) -> None:
    db.create_tables(MODELS)
