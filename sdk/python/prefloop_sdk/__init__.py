"""prefloop's client SDK: the Avro event codec and the feedback client."""

__version__ = "0.1.0"
