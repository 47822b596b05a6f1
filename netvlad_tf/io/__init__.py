"""The bottom layer: file formats and writing files (atomic writes, image headers, MATLAB `.mat`
and torch checkpoint readers, progress output). Imports nothing else of the package."""
