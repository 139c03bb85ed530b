"""Fuzz targets, one per parser of bytes from outside (see harness.py and README's
"Hostile input").

Here, under tests/, because they are test code: ruff checks them with the other
tests, they are not shipped in the wheel, and pytest collects only test_fuzz.py
(the targets are fuzz_*.py), which replays the corpora and runs every target
briefly. Each target runs as a script under atheris (``make fuzz``) and imports as
a module (``tests.fuzz.fuzz_onnx``) for the replays.
"""
