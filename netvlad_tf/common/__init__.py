"""Helpers every room may use that are not file I/O: the registry decorator and TensorFlow error
text."""
