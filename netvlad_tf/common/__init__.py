"""Helpers every room may use that are not file I/O: the registry decorator, TensorFlow error
text, and the deprecation of renamed arguments."""
