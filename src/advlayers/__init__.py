"""advlayers: which layers make a network susceptible to adversarial attacks (block-wise retraining)."""

__version__ = "0.1.0"
