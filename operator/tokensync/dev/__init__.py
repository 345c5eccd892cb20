"""The dev kit: what runs *around* the operator in tests and the demo, never in a cluster.

- ``cluster``: a Kubernetes API stand-in (kmock made faithful) on a real HTTP port;
- ``tokenserver``: a Palisade- and RFC 6749-compatible HTTPS token server with failure modes;
- ``demo``: the operator end to end on those two (``tokensync-dev demo``).

No operator module imports this package; it imports the operator's.
"""
