"""lightcls: lightweight image classifiers (GhostNet, EfficientNet, MobileNet) in JAX/Flax."""
__version__ = '0.1.0'
