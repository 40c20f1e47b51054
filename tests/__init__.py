"""slimkit tests, laid out like the package (tests/passes/test_quantize.py tests slimkit/passes/quantize.py)."""
