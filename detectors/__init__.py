"""Pure online detectors: validated events in, signals out. No I/O, no Kafka, no Faust."""
