"""Peer adapters by name. Adding a peer: write its adapter class, then list it here."""

from __future__ import annotations

from bench.peers.base import BuildSettings, Params, Peer, PeerUnavailable
from bench.peers.chroma_peer import Chroma
from bench.peers.faiss_peers import FaissBinary, FaissFlat, FaissHNSW, FaissIVFPQ
from bench.peers.hnswlib_peer import Hnswlib
from bench.peers.lancedb_peer import LanceDB
from bench.peers.milvus_peer import MilvusLite
from bench.peers.svs_peer import SvsLeanVec, SvsLVQ, SvsVamana
from bench.peers.trove_peer import TroveFlat, TroveHNSW
from bench.peers.usearch_peer import USearch

# faiss-flat first: it is the baseline every other row is divided by.
PEERS: dict[str, type[Peer]] = {
    cls.name: cls
    for cls in (
        FaissFlat, FaissHNSW, FaissIVFPQ, FaissBinary, Hnswlib, USearch, SvsVamana, SvsLVQ, SvsLeanVec,
        MilvusLite, LanceDB, Chroma, TroveFlat, TroveHNSW,
    )
}
BASELINE = FaissFlat.name

__all__ = ["BASELINE", "PEERS", "BuildSettings", "Params", "Peer", "PeerUnavailable"]
