"""The edges of shillguard: Faust app, topics, records, agents, sinks, the CLI and the offline replay driver."""
