#!/usr/bin/env python3
"""Dates a freshly built rootfs back to its server's install day.

Usage: backdate.py ROOTFS BUILD_START INSTALLED

Every file the build wrote (modified at or after BUILD_START) is moved back by
BUILD_START - INSTALLED, keeping the minutes between them, and the timestamps in
dpkg's and apt's logs with them: the box then looks installed that day, not today.
Files from the packages keep their own (older) dates, as on any Debian install.
"""
import os
import re
import sys
import time

rootfs, build_start, installed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
shift = build_start - installed

for base, dirs, files in os.walk(rootfs):
    dirs[:] = [d for d in dirs if not (base == rootfs and d in ("proc", "sys", "dev"))]
    for name in dirs + files:
        path = os.path.join(base, name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if st.st_mtime >= build_start:
            mtime = st.st_mtime - shift
            os.utime(path, (mtime, mtime), follow_symlinks=False)

stamp = re.compile(rb"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)")


def moved(match):
    then = time.mktime(time.strptime(match.group(1).decode(), "%Y-%m-%d %H:%M:%S"))
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(then - shift)).encode()


for log in ("var/log/dpkg.log", "var/log/alternatives.log", "var/log/apt/history.log",
            "var/log/apt/term.log"):
    path = os.path.join(rootfs, log)
    if not os.path.isfile(path):
        continue
    st = os.lstat(path)
    with open(path, "rb") as f:
        text = f.read()
    with open(path, "wb") as f:
        f.write(stamp.sub(moved, text))
    os.utime(path, (st.st_atime, st.st_mtime), follow_symlinks=False)
