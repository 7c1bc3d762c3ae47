"""Kafka stream ingest: the embedded broker client side, exactly-once Kafka → Delta."""
