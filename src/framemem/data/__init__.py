"""Data: video files, procedural videos, training histories, latent caches and storyboards."""
