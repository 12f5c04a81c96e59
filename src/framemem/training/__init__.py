"""Training: the Accelerate loop and the objectives of stage 0 (denoising), 1 (retrieval) and 2 (autoregressive)."""
