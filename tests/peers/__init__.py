"""Peer programs for the interoperability tests and benchmarks: utp-native, libtorrent, txutp's bare engine
(``engine_peer``), and the one UDP relay; see README.md and setup_peers.sh."""
