"""The tokensync benchmark: the operator as its own process against the API stand-in and the dev token server.

Run ``python -m bench`` (``make bench``); see bench/README.md for the method.
"""
