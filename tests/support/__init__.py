"""Helpers the tests share: a tiny backbone, harnesses, reference forward passes and
file makers in the released layouts."""
