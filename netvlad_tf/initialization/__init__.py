"""Initialising a model from data: k-means cluster centres and learned PCA whitening."""
