"""Fusion stage: MMDRFuse networks, losses, dynamic refresh, distillation, training, inference, metrics."""
