"""Real uTP peers (utp-native, libtorrent) for interoperability tests; see setup_peers.sh."""
