"""API keys, scopes and rate limits: from a request's key to a `Principal` that may or may not act."""

from service.auth.authenticator import Authenticator
from service.auth.keys import KeyRecord, KeyStore, generate_key, hash_key, prefix_of
from service.auth.principal import ANONYMOUS, SCOPES, Principal, Scope, parse_scopes
from service.auth.ratelimit import RateLimiter

__all__ = [
    "ANONYMOUS",
    "SCOPES",
    "Authenticator",
    "KeyRecord",
    "KeyStore",
    "Principal",
    "RateLimiter",
    "Scope",
    "generate_key",
    "hash_key",
    "parse_scopes",
    "prefix_of",
]
