"""Schedules: cron in a timezone, the job and fine-tune templates they fire, one firing per
slot."""
