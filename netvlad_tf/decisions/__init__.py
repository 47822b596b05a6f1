"""Decisions from similarity scores: precision–recall of best matches, sequence scores, loop
closure on a stream, and image pairs for structure from motion."""
