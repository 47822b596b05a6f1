"""Keras layers of the paper: NetVLAD, the baseline poolings, L2 normalisation, PCA whitening."""
