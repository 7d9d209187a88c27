"""The demo worker: starts only once the API is healthy, then does a little work now and then.

It finds the API through the state taskmux keeps; a real worker would read a queue."""

import os
import time

every = float(os.environ.get("WORK_EVERY", "3"))
job = 0
print("worker: the API is healthy, starting work", flush=True)
while True:
    job += 1
    print(f"worker: finished job {job}", flush=True)
    time.sleep(every)
