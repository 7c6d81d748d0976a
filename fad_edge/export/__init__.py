"""Export: ONNX graphs (FP32, INT8, FP16) and TensorRT engines from a checkpoint, checked against PyTorch."""
