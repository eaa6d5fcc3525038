"""Token verification: Centrifugo connection and subscription JWTs, static keys and JWKS."""

from trunkline.auth.claims import ConnectionClaims, Override, SubOptions, SubscriptionClaims
from trunkline.auth.jwks import JwksClient
from trunkline.auth.jwt import TokenVerifier

__all__ = [
    "ConnectionClaims",
    "JwksClient",
    "Override",
    "SubOptions",
    "SubscriptionClaims",
    "TokenVerifier",
]
