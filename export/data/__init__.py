"""Training data: the real talking-face pack and any folder in its format (pack.py), MEAD paths (mead.py)."""
