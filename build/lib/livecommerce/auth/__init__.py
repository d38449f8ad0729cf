"""Tokens to principals, and what a principal may do in a room. Pure."""

from livecommerce.auth.principal import GUEST_ROLE, Principal, Role, guest
from livecommerce.auth.tokens import issue_token, verify_token

__all__ = ["GUEST_ROLE", "Principal", "Role", "guest", "issue_token", "verify_token"]
