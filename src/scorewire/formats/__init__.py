"""Model artifacts and configuration, bytes ⇄ specifications; no serving code.

- ``linear_spec``: :class:`~scorewire.formats.linear_spec.LinearSpec`, what every
  linear format reduces to;
- ``linear_json``: ``model.json``, scorewire's linear format (read and write);
- ``pmml``: PMML RegressionModel (read, with a hardened XML parser);
- ``onnx_graph``: ONNX files read and checked, and the graph inspector that finds a
  linear model in a graph;
- ``model_toml``: a model directory's ``model.toml`` (batching, limits, versions);
- ``reference``: ``reference.json``, the reference feature statistics drift is
  measured against (read and write).
"""
