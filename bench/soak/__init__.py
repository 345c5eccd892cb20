"""The tokensync soak test: many short-lived tokens, random token-endpoint faults and operator restarts.

Run ``python -m bench.soak`` (``make soak``); see bench/README.md ("The soak test") for what it measures.
"""
