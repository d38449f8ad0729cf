"""The edges: the aiohttp application, its HTTP routes and the WebSocket endpoint."""

from livecommerce.http.app import create_app

__all__ = ["create_app"]
