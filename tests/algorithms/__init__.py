"""Tests of slimkit.algorithms (a package, so test file names may repeat elsewhere)."""
