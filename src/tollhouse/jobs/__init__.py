"""Work scheduled in the server: the collector's jobs, the scheduler, one replica per job."""
