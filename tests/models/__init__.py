"""Tests of the model-kinds layer (slimkit.models). A package, so its test file names may repeat names in tests/."""
