"""Whether a Redis server keeps what the pack queues in it across a restart.

The event outbox is durable only when Redis persists with AOF
(`appendonly yes`): `appendfsync always` loses nothing acknowledged,
`everysec` (Redis' default) at most about one second of writes, `no` what the
OS had not flushed yet (typically up to 30 s). RDB snapshots alone (`save`)
lose everything written since the last snapshot; with neither, a restart
loses every queued event. `redis_persistence(client)` reads the server's
settings (CONFIG GET, falling back to INFO persistence where CONFIG is
disabled, as on some managed services) and says what a restart would lose.
Used by get_queue_stats and health_check.
"""

AOF_LOSS = {
    "always": "nothing acknowledged (every write is fsynced)",
    "everysec": "up to about 1 s of writes",
    "no": "writes the OS had not flushed yet (typically up to 30 s)",
}


def redis_persistence(client):
    """{"appendonly", "appendfsync", "save", "aof_enabled", "rdb_last_save_age_s", "rdb_changes_since_last_save",
    "loading", "durable", "restart_loses", "warning", "source"} for a redis-py client (decode_responses=True). Raises redis.RedisError if unreachable."""
    import redis

    config, source = {}, "config"
    try:
        for name in ("appendonly", "appendfsync", "save"):
            config.update(client.config_get(name) or {})
    except redis.ResponseError:  # CONFIG renamed or disabled: INFO still tells whether AOF is on
        source = "info"
    info = client.info("persistence")
    aof_enabled = str(config.get("appendonly", "")).lower() == "yes" if source == "config" else \
        str(info.get("aof_enabled", 0)) == "1"
    fsync = config.get("appendfsync") if source == "config" else None
    save = config.get("save") if source == "config" else None
    last_save = info.get("rdb_last_save_time")
    try:
        rdb_age = max(0, int(client.time()[0]) - int(last_save)) if last_save else None
    except (redis.RedisError, TypeError, ValueError):
        rdb_age = None
    if aof_enabled:
        loses = AOF_LOSS.get(fsync, "up to about 1 s of writes (appendfsync unknown)")
        warning = None
        if fsync == "no":
            warning = "Redis AOF uses appendfsync no: a crash can lose recently queued events; use everysec or always"
    elif save:
        loses = "every event queued since the last RDB snapshot (save %s)" % save
        warning = "Redis persists only RDB snapshots: a restart loses events queued since the last one; set appendonly yes"
    else:
        loses = "every queued event (no AOF, no RDB snapshots)"
        warning = "Redis does not persist (appendonly no, save \"\"): a restart loses every queued event; set appendonly yes"
    return {
        "appendonly": "yes" if aof_enabled else "no",
        "appendfsync": fsync,
        "save": save,
        "aof_enabled": aof_enabled,
        "aof_last_write_status": info.get("aof_last_write_status"),
        "rdb_last_bgsave_status": info.get("rdb_last_bgsave_status"),
        "rdb_last_save_age_s": rdb_age,
        "rdb_changes_since_last_save": info.get("rdb_changes_since_last_save"),
        "loading": bool(int(info.get("loading", 0) or 0)),
        "durable": bool(aof_enabled and fsync in ("always", "everysec")),
        "restart_loses": loses,
        "warning": warning,
        "source": source,
    }
