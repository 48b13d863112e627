"""Storage for learners: replay buffers, eviction policies and the FAISS vector store (imported lazily)."""

from continual.memory.buffers import GDumbBuffer, ReplayBuffer, ReservoirBuffer, make_buffer

__all__ = ["GDumbBuffer", "ReplayBuffer", "ReservoirBuffer", "VectorStore", "make_buffer"]


def __getattr__(name: str):
    if name == "VectorStore":  # faiss is imported only when the store is used
        from continual.memory.vector_store import VectorStore

        return VectorStore
    if name == "ClassBalancedBuffer":  # renamed GDumbBuffer; buffers' own getattr warns
        from continual.memory import buffers

        return buffers.ClassBalancedBuffer
    raise AttributeError(name)
