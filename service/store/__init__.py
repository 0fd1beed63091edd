"""The SQL store: identities, faces and their embeddings. The source of truth."""

from service.store.repository import FaceRecord, IdentityRecord, NewFace, Store

__all__ = ["FaceRecord", "IdentityRecord", "NewFace", "Store"]
