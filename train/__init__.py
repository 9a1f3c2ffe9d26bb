"""Training stage: neurons and surrogate gradients, models, data, the training loop and checkpoints."""
