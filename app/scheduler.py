"""The seed's import path of the scheduler; it lives in ``app.scheduling`` now."""

from app.scheduling.scheduler import MLScheduler, cron_trigger, latest_fire_time

__all__ = ["MLScheduler", "cron_trigger", "latest_fire_time"]
