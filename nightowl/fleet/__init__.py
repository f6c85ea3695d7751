"""The fleet: worker heartbeats, the maintenance pass that repairs what a dead worker or a lost
broker message left, and whether anything is there to run a queue."""
