"""Readers and writers of the agent platform's streams and queues for the sensors:
a Redis Streams consumer-group reader, agent execution entries, and BullMQ (failures, Queue.add).
"""
