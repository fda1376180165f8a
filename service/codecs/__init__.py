"""Wire formats, one module per protocol, on top of the one JSON reader in `codecs.json`."""
