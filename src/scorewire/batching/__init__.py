"""Dynamic batching: a pure merge/split half and an asyncio half."""

from ._batcher import BatchConfig, DynamicBatcher
from ._merge import batch_key, merge_inputs, split_outputs

__all__ = ["BatchConfig", "DynamicBatcher", "batch_key", "merge_inputs", "split_outputs"]
