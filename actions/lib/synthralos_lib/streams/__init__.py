"""Readers and writers of the agent platform's queues and streams: BullMQ
(failure watching from its events stream, and adding jobs as Queue.add does).
"""
