"""The SQL store: collections, identities, faces and their embeddings. The source of truth."""

from service.store.repository import CollectionRecord, CollectionStore, FaceRecord, IdentityRecord, NewFace, Store

__all__ = ["CollectionRecord", "CollectionStore", "FaceRecord", "IdentityRecord", "NewFace", "Store"]
