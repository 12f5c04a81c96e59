"""The networks: the memory encoder φ, the DiT with a memory, latent codecs and text encoders."""
