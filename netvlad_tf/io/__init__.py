"""The bottom layer: file formats and writing files (atomic writes, image headers, MATLAB `.mat`
and torch checkpoint readers, TensorFlow error text). Imports nothing else of the package."""
