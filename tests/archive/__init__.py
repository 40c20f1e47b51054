"""Tests of slimkit.archive (a package, so test file names may repeat elsewhere)."""
