"""Side-by-side HTTP benchmark of the service against two floor servers; run `python -m bench`."""
