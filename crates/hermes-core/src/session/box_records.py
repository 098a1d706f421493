# utmp, wtmp and lastlog records of an SSH login, as sshd writes them. The session
# helper (box_login.sh) prints the MOTD and "Last login:" itself, before this updates
# lastlog. Run as `python3 -I -S - login|logout USER UID LINE HOST PID` with this
# text on stdin.
import fcntl
import os
import struct
import sys
import time

UTMP = "/var/run/utmp"
WTMP = "/var/log/wtmp"
LASTLOG = "/var/log/lastlog"
# struct utmp on x86_64 glibc: 384 bytes.
UTMP_FORMAT = "=hxxi32s4s32s256shhiii4i20s"
LASTLOG_FORMAT = "=i32s256s"
USER_PROCESS, DEAD_PROCESS = 7, 8


def record(kind, user, line, host, pid, now):
    return struct.pack(
        UTMP_FORMAT, kind, pid, line.encode()[:32], line.encode()[-4:],
        user.encode()[:32], host.encode()[:256], 0, 0, 0,
        int(now), int((now % 1) * 1e6), 0, 0, 0, 0, b"")


def update_utmp(entry, line):
    size = struct.calcsize(UTMP_FORMAT)
    try:
        with open(UTMP, "r+b") as f:
            # Sessions sharing a machine log in and out at the same time.
            fcntl.lockf(f, fcntl.LOCK_EX)
            data = f.read()
            offset = len(data)
            for i in range(0, len(data) - size + 1, size):
                if data[i + 8:i + 40].rstrip(b"\0") == line.encode()[:32]:
                    offset = i
                    break
            f.seek(offset)
            f.write(entry)
    except FileNotFoundError:
        with open(UTMP, "wb") as f:
            f.write(entry)


def main():
    action, user, uid, line, host, pid = sys.argv[1:7]
    uid, pid, now = int(uid), int(pid), time.time()
    size = struct.calcsize(LASTLOG_FORMAT)
    if action == "login":
        with open(LASTLOG, "r+b" if os.path.exists(LASTLOG) else "wb") as f:
            f.seek(uid * size)
            f.write(struct.pack(LASTLOG_FORMAT, int(now), line.encode()[:32], host.encode()[:256]))
    kind = USER_PROCESS if action == "login" else DEAD_PROCESS
    entry = record(kind, user if kind == USER_PROCESS else "", line, host, pid, now)
    update_utmp(entry, line)
    with open(WTMP, "ab") as f:
        f.write(entry)


if __name__ == "__main__":
    main()
