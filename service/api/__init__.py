"""Thin routers: parse, call a service object, return JSON, SSE or websocket frames."""
