"""A record batch as aiokafka's producer hands it to `streams.publisher.BatchPublisher`, for tests that fake
the producer: it counts its records and gives back a placeholder for each."""

from __future__ import annotations


class Batch:
    def __init__(self):
        self.n = 0

    def append(self, **kwargs):
        self.n += 1
        return object()

    def close(self):
        pass
