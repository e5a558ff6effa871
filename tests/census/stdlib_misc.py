"""Everyday stdlib: datetime/zoneinfo, urllib.parse, hashing, uuid/secrets/random, logging, csv, resource."""

import base64
import calendar
import csv
import datetime as dt
import getpass
import hashlib
import locale
import logging
import os
import platform
import random
import resource
import secrets
import signal
import statistics
import time
import urllib.parse
import uuid
from zoneinfo import ZoneInfo

now = dt.datetime(2024, 3, 10, 12, tzinfo=ZoneInfo("America/New_York"))
print(now.astimezone(ZoneInfo("Europe/Paris")).isoformat(), dt.datetime.now().year > 2000)
print(calendar.monthrange(2024, 2), time.strftime("%Y", time.localtime()), time.tzname)
u = urllib.parse.urlparse("https://example.com/a/b?x=1&y=2#frag")
print(
    u.netloc,
    urllib.parse.parse_qs(u.query),
    urllib.parse.quote("a b/c"),
    urllib.parse.urljoin(u.geturl(), "../c"),
)
print(hashlib.sha256(b"data").hexdigest()[:12], base64.b64encode(b"hi"), uuid.uuid4().version)
print(len(secrets.token_hex(8)), random.Random(0).random() < 1, statistics.median([3, 1, 2]))
logging.basicConfig(filename="run.log", level=logging.INFO)
logging.getLogger("census").info("logged")
with open("rows.csv", "w", newline="") as fh:
    csv.writer(fh).writerows([["a", "b"], [1, 2]])
with open("rows.csv", newline="") as fh:
    print(list(csv.DictReader(fh)))
print(getpass.getuser(), platform.platform()[:5], os.cpu_count(), len(os.sched_getaffinity(0)) > 0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0, resource.getrlimit(resource.RLIMIT_NOFILE))
print(locale.getlocale(), os.getloadavg()[0] >= 0, os.times().user >= 0, os.uname().sysname)
signal.signal(signal.SIGALRM, lambda *a: None)
signal.alarm(5)
signal.alarm(0)
signal.setitimer(signal.ITIMER_REAL, 0.01)
time.sleep(0.05)
print("stdlib done", os.getpid(), os.getppid(), os.getuid(), os.getgroups())
