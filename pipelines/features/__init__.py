"""Feature views: registry, hopping-window computation, offline and online stores, retrieval."""
