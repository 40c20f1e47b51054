"""Compression algorithms as plain numerical code on numpy arrays, free of model types.

Passes (PyTorch or ONNX side) call into these modules, so one formula serves every framework and
can be tested on its own.
"""
