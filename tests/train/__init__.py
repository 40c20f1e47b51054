"""Tests of slimkit.train (a package, so test file names may repeat elsewhere)."""
