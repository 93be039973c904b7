"""Storage port and its backends. Only :mod:`buquet.storage.s3` imports an S3 client."""

from .base import ObjectInfo, ObjectStore, StoredObject
from .local import LocalStore
from .memory import MemoryStore

__all__ = ["ObjectInfo", "ObjectStore", "StoredObject", "LocalStore", "MemoryStore"]
