"""audio-ports: faithful reference ports of four audio models."""
__version__ = "0.1.0"
