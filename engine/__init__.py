"""kfusion-live runtime: audio in, dual-domain features, ONNX model, landmark frames out (no torch)."""

__version__ = "0.1.0"
