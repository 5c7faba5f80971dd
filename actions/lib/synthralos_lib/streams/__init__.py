"""Readers of outside event streams for the pack's sensors: a Redis Streams
consumer-group reader and the decoding of agent execution entries.
"""
