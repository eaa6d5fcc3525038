"""Typed keys of what the aiohttp applications carry (used by transport, api, observe and app)."""

from __future__ import annotations

from aiohttp import web

from .node import Node

NODE_KEY = web.AppKey("node", Node)
