"""Leaving with the model: a job as an ONNX graph (onnx_graph.py) and as a plain PyTorch script (script.py)."""
