"""Dynamic batching: a pure merge/split half and an asyncio half."""

from ._batcher import BatchConfig, DynamicBatcher
from ._merge import merge_inputs, split_outputs

__all__ = ["BatchConfig", "DynamicBatcher", "merge_inputs", "split_outputs"]
