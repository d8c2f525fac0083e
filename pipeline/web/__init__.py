"""What the HTTP processes (`tailpipe api` and `tailpipe collect`) share: uvicorn until SIGTERM
(`server`), request counts and latency by route (`metrics`), and bearer tokens kept as digests
(`tokens`).
"""
