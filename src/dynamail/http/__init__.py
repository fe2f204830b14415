"""The HTTP admin port: WebAdmin pages, the JSON API, /metrics and /health.

``dynamail.http.app.start(ctx)`` serves it; see docs/webadmin.md.
"""
