"""Torch side of kfusion-live: data, synthetic corpus, model, training, evaluation and ONNX export."""
