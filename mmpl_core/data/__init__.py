"""Synthetic training data and the fixed linear (PCA) latent space of the embedded demo model."""
