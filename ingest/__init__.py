"""Central ingest (dust-ingest): agents' MQTT streams into PostgreSQL, split over N instances
by MQTT shared subscriptions, idempotent on (gateway, stream, seq). See docs/ingest.md."""
