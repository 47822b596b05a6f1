"""Running a model over many inputs: the one batched-inference loop and its compiled forward pass."""
