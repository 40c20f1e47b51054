"""Tests of slimkit.report (a package, so test file names may repeat elsewhere)."""
