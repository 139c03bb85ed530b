"""The models the service scores, behind one protocol (``Model``): ``native`` (a
linear spec on the compiled kernel) and ``ort`` (any ONNX graph on onnxruntime);
``loader`` turns an artifact into one of them."""

from .loader import ARTIFACTS, Model, find_artifact, load_model

__all__ = ["ARTIFACTS", "Model", "find_artifact", "load_model"]
