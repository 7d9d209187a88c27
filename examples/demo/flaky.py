"""A task that crashes now and then, so restarts (and their backoff) can be seen."""

import random
import sys
import time

life = random.uniform(5, 20)
print(f"flaky: up; I will crash in {life:.0f}s", flush=True)
time.sleep(life)
print("flaky: something went wrong!", file=sys.stderr, flush=True)
sys.exit(1)
