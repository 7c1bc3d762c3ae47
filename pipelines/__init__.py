"""The Arrow-native core: the one Delta write path, ingest, reads, streams, features, maintenance."""
