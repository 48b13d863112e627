"""Storage for learners: replay buffers and the FAISS vector store (imported lazily)."""

from continual.memory.buffers import ClassBalancedBuffer, ReplayBuffer, ReservoirBuffer, make_buffer

__all__ = ["ClassBalancedBuffer", "ReplayBuffer", "ReservoirBuffer", "VectorStore", "make_buffer"]


def __getattr__(name: str):
    if name == "VectorStore":  # faiss is imported only when the store is used
        from continual.memory.vector_store import VectorStore

        return VectorStore
    raise AttributeError(name)
