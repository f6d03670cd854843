"""Coverage-guided fuzz targets (atheris) for every parser of untrusted bytes; see README "Fuzzing"."""
